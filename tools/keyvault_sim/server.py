"""Local HTTPS Azure Key Vault (secrets REST protocol) for driving the real SecretClient in tests.

The unmodified ``azure.keyvault.secrets.SecretClient`` talks to it over real TLS (trustme CA) and the
real 401-challenge / bearer-token protocol. Build the client like this::

    with LocalKeyVault() as vault:
        vault.set_secret("klaviyo-api-key", "pk_test")
        client = SecretClient(
            vault.url,
            StaticTokenCredential(),              # or any TokenCredential returning vault.accepted_token
            verify_challenge_resource=False,      # challenge resource vault.azure.net is not a parent of 127.0.0.1
            connection_verify=vault.ca_cert_path, # trust the trustme CA for this client only
        )
        # equivalently: SecretClient(vault.url, StaticTokenCredential(), **vault.client_kwargs())

``verify_challenge_resource=False`` is mandatory: the SDK refuses (ValueError) to send a token for
resource ``https://vault.azure.net`` to a host that is not ``*.vault.azure.net``. ``connection_verify``
is preferred over ``REQUESTS_CA_BUNDLE`` (which also works, but is process-wide and is already set on
some machines). Add ``retry_total=0`` when a test expects a connection/TLS failure, to skip backoff.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import socketserver
import ssl
import sys
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO
from urllib.parse import parse_qsl, unquote, urlsplit

import trustme
from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions

DEFAULT_TOKEN = "local-keyvault-sim-token"
DEFAULT_TENANT_ID = "00000000-0000-4000-8000-00000000c0de"
KEYVAULT_RESOURCE = "https://vault.azure.net"
KEYVAULT_SCOPE = KEYVAULT_RESOURCE + "/.default"

_NAME_RE = re.compile(r"[0-9A-Za-z-]{1,127}")
_MAX_PAGE = 25
_RECOVERY_LEVEL = "Recoverable+Purgeable"
_RECOVERABLE_DAYS = 90
_JSON = "application/json; charset=utf-8"


@dataclass(frozen=True)
class SeenRequest:
    """One HTTP request the vault answered (challenge requests included)."""

    method: str
    path: str
    query: dict[str, str]
    token: str | None
    status: int
    connection: int


@dataclass(frozen=True)
class TokenRequest:
    """One token request made to a StaticTokenCredential."""

    scopes: tuple[str, ...]
    tenant_id: str | None
    claims: str | None


class StaticTokenCredential:
    """TokenCredential (and SupportsTokenInfo) that always returns the same bearer token."""

    def __init__(self, token: str = DEFAULT_TOKEN, *, expires_in: int = 3600) -> None:
        self.token = token
        self.expires_in = expires_in
        self.requests: list[TokenRequest] = []

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        self.requests.append(TokenRequest(scopes, tenant_id, claims))
        return AccessToken(self.token, int(time.time()) + self.expires_in)

    def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        opts = options or {}
        self.requests.append(TokenRequest(scopes, opts.get("tenant_id"), opts.get("claims")))
        return AccessTokenInfo(self.token, int(time.time()) + self.expires_in)

    def close(self) -> None:
        pass

    def __enter__(self) -> StaticTokenCredential:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _Version:
    name: str
    version: str
    value: str
    enabled: bool
    created: int
    updated: int
    content_type: str | None = None
    tags: dict[str, str] | None = None
    not_before: int | None = None
    expires: int | None = None


@dataclass
class _Deleted:
    versions: list[_Version]
    deleted_date: int


@dataclass
class _Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class _BadRequest(Exception):
    pass


def _error(status: int, code: str, message: str, inner: str | None = None, **headers: str) -> _Response:
    err: dict[str, Any] = {"code": code, "message": message}
    if inner is not None:
        err["innererror"] = {"code": inner}
    return _Response(status, {"error": err}, dict(headers))


def _not_found(ident: str) -> _Response:
    return _error(
        404,
        "SecretNotFound",
        f"A secret with (name/id) {ident} was not found in this key vault. If you recently deleted this secret "
        "you may be able to recover it using the correct recovery command. For help resolving this issue, "
        "please see https://go.microsoft.com/fwlink/?linkid=2125182",
    )


def _bad_name(name: str) -> _Response:
    return _error(400, "BadParameter", f"The request URI contains an invalid name: {name}")


def _check_name(name: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"invalid Key Vault secret name {name!r}: 1-127 characters, letters, digits and '-'")


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _opt_int(attrs: dict[str, Any], key: str) -> int | None:
    value = attrs.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadRequest(f"Property 'attributes.{key}' must be a Unix time in seconds.")
    return value


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Idle keep-alive connections end on their own even if stop() never runs.
    timeout = 30
    # Headers and body go out as separate writes; with Nagle on, each response stalls on the client's delayed ACK.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        self.request.settimeout(self.timeout)
        # Handshake here, in the connection's own thread, so a stalled or failing client never blocks accept().
        self.request.do_handshake()
        self.connection_number = self.server.next_connection_number()
        super().setup()

    def _serve(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.send_error(400, "Invalid Content-Length")
            return
        body = self.rfile.read(length) if length > 0 else b""
        vault = self.server.vault
        authorization = self.headers.get("Authorization")
        try:
            resp = vault._dispatch(self.command, self.path, authorization, body, self.connection_number)
        except Exception as exc:
            # A simulator bug must reach the client as a 500 it can report, not as a dropped connection.
            traceback.print_exc(file=sys.stderr)
            resp = _error(500, "InternalServerError", f"local Key Vault simulator error: {exc!r}")
        payload = b"" if resp.body is None else json.dumps(resp.body).encode()
        self.send_response(resp.status)
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        self.send_header("x-ms-keyvault-region", "local")
        self.send_header("Cache-Control", "no-cache")
        for name, value in resp.headers.items():
            self.send_header(name, value)
        if resp.status != 204:
            self.send_header("Content-Type", _JSON)
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if resp.status != 204:
            self.wfile.write(payload)

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST = _serve

    def log_message(self, format: str, *args: Any) -> None:
        stream = self.server.vault._log_stream
        if stream is not None:
            stream.write(f"keyvault_sim: {self.address_string()} {format % args}\n")
            stream.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext, vault: LocalKeyVault) -> None:
        self.context = context
        self.vault = vault
        self.connections: set[ssl.SSLSocket] = set()
        self.connections_lock = threading.Lock()
        self.connection_count = 0
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall offline.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def next_connection_number(self) -> int:
        with self.connections_lock:
            self.connection_count += 1
            return self.connection_count

    def get_request(self) -> tuple[ssl.SSLSocket, Any]:
        sock, addr = self.socket.accept()
        conn = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self.connections_lock:
            self.connections.add(conn)
        return conn, addr

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.connections_lock:
            conns = list(self.connections)
        for conn in conns:
            # Plain-socket shutdown: SSLSocket.shutdown would race the handler thread still reading from it.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(conn, socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        # Clients rejecting our certificate, hanging up, or idling out are expected, not server bugs.
        if isinstance(exc, ssl.SSLError | ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class LocalKeyVault:
    """In-process HTTPS Key Vault serving secrets to the real azure-keyvault-secrets SecretClient."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        accepted_token: str = DEFAULT_TOKEN,
        tenant_id: str = DEFAULT_TENANT_ID,
        log_stream: TextIO | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.accepted_token = accepted_token
        self.tenant_id = tenant_id
        self._log_stream = log_stream
        self._lock = threading.Lock()
        self._secrets: dict[str, list[_Version]] = {}
        self._deleted: dict[str, _Deleted] = {}
        self._seen: list[SeenRequest] = []
        self._denied = False
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._url = ""

        self._ca = trustme.CA(organization_name="keyvault-sim local CA")
        identities = dict.fromkeys(["127.0.0.1", "localhost", host])
        self._server_cert = self._ca.issue_cert(*identities)
        # Removed when this object is garbage-collected (or at exit), not by stop(): a client of a stopped
        # vault must see a connection error, not requests' "invalid CA bundle path" OSError.
        self._tmp = tempfile.TemporaryDirectory(prefix="keyvault-sim-")
        self.ca_cert_path: str = str(Path(self._tmp.name) / "keyvault-sim-ca.pem")
        self._ca.cert_pem.write_to_path(self.ca_cert_path)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> str:
        """Bind, serve in a daemon thread and return the vault URL ``https://HOST:PORT/``."""
        if self._server is not None or self._stopped:
            raise RuntimeError("LocalKeyVault can be started only once")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._server_cert.configure_cert(context)
        self._server = _Server((self.host, self.port), context, self)
        self.port = self._server.server_address[1]
        self._url = f"https://{self.host}:{self.port}/"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="keyvault-sim", daemon=True
        )
        self._thread.start()
        return self._url

    def stop(self) -> None:
        """Stop serving and drop open keep-alive connections (the CA file stays). Idempotent; no restart."""
        self._stopped = True
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> LocalKeyVault:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Vault URL (``https://HOST:PORT/``); only valid after start()."""
        if not self._url:
            raise RuntimeError("LocalKeyVault is not started")
        return self._url

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments a SecretClient needs to talk to this vault (see module docstring)."""
        return {"verify_challenge_resource": False, "connection_verify": self.ca_cert_path}

    # -- test controls ---------------------------------------------------------------------------

    def set_secret(
        self,
        name: str,
        value: str,
        enabled: bool = True,
        *,
        content_type: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> str:
        """Add a new version of ``name`` (rotation) and return its version id; purges a soft-deleted one."""
        _check_name(name)
        with self._lock:
            self._deleted.pop(name.lower(), None)
            return self._add_version(name, value, enabled, content_type, tags, None, None).version

    def disable_secret(self, name: str, version: str | None = None) -> None:
        """Disable the latest (or the given) version, so reading it answers 403 SecretDisabled."""
        with self._lock:
            found = self._find(name, version)
            if found is None:
                raise KeyError(f"no secret {name!r}" + (f" version {version!r}" if version else ""))
            found.enabled = False
            found.updated = int(time.time())

    def delete_secret(self, name: str) -> None:
        """Remove every version of ``name`` outright (as if deleted and purged)."""
        with self._lock:
            if self._secrets.pop(name.lower(), None) is None:
                raise KeyError(f"no secret {name!r}")
            self._deleted.pop(name.lower(), None)

    def versions(self, name: str) -> list[str]:
        """Version ids of ``name``, oldest first (empty if absent)."""
        with self._lock:
            return [v.version for v in self._secrets.get(name.lower(), [])]

    def deny_access(self, denied: bool = True) -> None:
        """While denied, every authenticated request answers 403 ForbiddenByRbac."""
        self._denied = denied

    @property
    def requests_seen(self) -> list[SeenRequest]:
        """Every request answered so far, in order (a copy)."""
        with self._lock:
            return list(self._seen)

    @property
    def tokens_seen(self) -> list[str]:
        """Bearer tokens presented, one per request that carried one, in order."""
        return [r.token for r in self.requests_seen if r.token is not None]

    def secret_get_count(self, name: str) -> int:
        """Authenticated GETs of ``name`` (any version, any outcome): what a caching client should minimise."""
        prefix = f"/secrets/{name.lower()}"
        return sum(
            1
            for r in self.requests_seen
            if r.method == "GET"
            and r.status != 401
            and (r.path.lower().rstrip("/") == prefix or r.path.lower().startswith(prefix + "/"))
            and not r.path.lower().rstrip("/").endswith("/versions")
        )

    def clear_log(self) -> None:
        """Forget requests_seen (and so tokens_seen)."""
        with self._lock:
            self._seen.clear()

    # -- protocol --------------------------------------------------------------------------------

    def _dispatch(self, method: str, target: str, authorization: str | None, body: bytes, conn: int) -> _Response:
        split = urlsplit(target)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        token = _bearer(authorization)
        try:
            resp = self._route(method, split.path, query, token, body)
        except _BadRequest as exc:
            resp = _error(400, "BadParameter", str(exc))
        with self._lock:
            self._seen.append(SeenRequest(method, split.path, query, token, resp.status, conn))
        return resp

    def _route(self, method: str, path: str, query: dict[str, str], token: str | None, body: bytes) -> _Response:
        if token != self.accepted_token:
            return self._challenge(token)
        if not query.get("api-version"):
            return _error(400, "BadParameter", "The 'api-version' query parameter is required.")
        segs = [unquote(s) for s in path.strip("/").split("/")]
        if self._denied:
            return self._rbac_denied(method, segs)
        with self._lock:
            return self._route_locked(method, segs, query, body)

    def _route_locked(self, method: str, segs: list[str], query: dict[str, str], body: bytes) -> _Response:
        collection, rest = segs[0], segs[1:]
        if rest and not _NAME_RE.fullmatch(rest[0]):
            return _bad_name(rest[0])
        if collection == "secrets":
            if not rest and method == "GET":
                return self._list(sorted(self._secrets.values(), key=lambda vs: vs[-1].name.lower()), query)
            if len(rest) == 1 and method == "GET":
                return self._get(rest[0], None)
            if len(rest) == 1 and method == "PUT":
                return self._put(rest[0], body)
            if len(rest) == 1 and method == "PATCH":
                return self._patch(rest[0], None, body)
            if len(rest) == 1 and method == "DELETE":
                return self._soft_delete(rest[0])
            if len(rest) == 2 and rest[1] == "versions" and method == "GET":
                return self._list_versions(rest[0], query)
            if len(rest) == 2 and method == "GET":
                return self._get(rest[0], rest[1])
            if len(rest) == 2 and method == "PATCH":
                return self._patch(rest[0], rest[1], body)
        elif collection == "deletedsecrets" and len(rest) >= 1:
            deleted = self._deleted.get(rest[0].lower())
            if deleted is None:
                return _error(404, "SecretNotFound", f"Deleted Secret not found: {rest[0]}")
            if len(rest) == 1 and method == "GET":
                return _Response(200, self._deleted_bundle(deleted))
            if len(rest) == 1 and method == "DELETE":
                del self._deleted[rest[0].lower()]
                return _Response(204)
            if rest[1:] == ["recover"] and method == "POST":
                self._secrets[rest[0].lower()] = self._deleted.pop(rest[0].lower()).versions
                return _Response(200, self._bundle(deleted.versions[-1], with_value=False))
        return _error(
            501, "NotImplemented", f"The local Key Vault simulator does not implement {method} /{'/'.join(segs)}."
        )

    def _challenge(self, token: str | None) -> _Response:
        if token is None:
            message = "AKV10000: Request is missing a Bearer or PoP token."
        else:
            message = "Access token is not valid for this vault (the simulator accepts only its accepted_token)."
        challenge = (
            f'Bearer authorization="https://login.microsoftonline.com/{self.tenant_id}", resource="{KEYVAULT_RESOURCE}"'
        )
        return _error(401, "Unauthorized", message, **{"WWW-Authenticate": challenge})

    def _rbac_denied(self, method: str, segs: list[str]) -> _Response:
        action = {
            "GET": "getSecret/action" if len(segs) > 1 and segs[0] == "secrets" else "readMetadata/action",
            "PUT": "setSecret/action",
            "PATCH": "update/action",
            "DELETE": "delete",
        }.get(method, "write/action")
        return _error(
            403,
            "Forbidden",
            "Caller is not authorized to perform action on resource.\r\n"
            "If role assignments, deny assignments or role definitions were changed recently, "
            "please observe propagation time.\r\n"
            f"Caller: oid=00000000-0000-0000-0000-000000000000;iss=https://sts.windows.net/{self.tenant_id}/\r\n"
            f"Action: 'Microsoft.KeyVault/vaults/secrets/{action}'\r\n"
            f"Resource: '/subscriptions/local/resourcegroups/local/providers/microsoft.keyvault/vaults/local/"
            f"{'/'.join(segs).lower()}'\r\n"
            "Assignment: (not found)\r\n"
            "DecisionReason: 'DeniedWithNoValidRBAC' \r\n"
            "Vault: local;location=local\r\n",
            "ForbiddenByRbac",
        )

    def _find(self, name: str, version: str | None) -> _Version | None:
        versions = self._secrets.get(name.lower())
        if not versions:
            return None
        if version is None:
            return versions[-1]
        return next((v for v in versions if v.version == version.lower()), None)

    def _add_version(
        self,
        name: str,
        value: str,
        enabled: bool,
        content_type: str | None,
        tags: dict[str, str] | None,
        not_before: int | None,
        expires: int | None,
    ) -> _Version:
        now = int(time.time())
        existing = self._secrets.setdefault(name.lower(), [])
        # Key Vault names are case-insensitive; the id keeps the casing the secret was first created with.
        display = existing[0].name if existing else name
        version = _Version(display, uuid.uuid4().hex, value, enabled, now, now, content_type, tags, not_before, expires)
        existing.append(version)
        return version

    def _get(self, name: str, version: str | None) -> _Response:
        found = self._find(name, version)
        if found is None:
            return _not_found(name if version is None else f"{name}/{version}")
        if not found.enabled:
            return _error(403, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled")
        return _Response(200, self._bundle(found))

    def _put(self, name: str, body: bytes) -> _Response:
        params = self._json_object(body)
        value = params.get("value")
        if not isinstance(value, str):
            raise _BadRequest("Property 'value' is required and must be a string.")
        if name.lower() in self._deleted:
            return _error(
                409,
                "Conflict",
                f"Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; "
                "in this state, the secret can only be recovered or purged.",
                "ObjectIsDeletedButRecoverable",
            )
        attrs = self._attributes_param(params)
        enabled = attrs.get("enabled", True)
        version = self._add_version(
            name,
            value,
            enabled is not False,
            self._opt_str(params, "contentType"),
            self._tags_param(params),
            _opt_int(attrs, "nbf"),
            _opt_int(attrs, "exp"),
        )
        return _Response(200, self._bundle(version))

    def _patch(self, name: str, version: str | None, body: bytes) -> _Response:
        found = self._find(name, version)
        if found is None:
            return _not_found(name if version is None else f"{name}/{version}")
        params = self._json_object(body)
        attrs = self._attributes_param(params)
        if attrs.get("enabled") is not None:
            found.enabled = attrs["enabled"]
        if "nbf" in attrs:
            found.not_before = _opt_int(attrs, "nbf")
        if "exp" in attrs:
            found.expires = _opt_int(attrs, "exp")
        if "contentType" in params:
            found.content_type = self._opt_str(params, "contentType")
        if "tags" in params:
            found.tags = self._tags_param(params)
        found.updated = int(time.time())
        return _Response(200, self._bundle(found, with_value=False))

    def _soft_delete(self, name: str) -> _Response:
        versions = self._secrets.pop(name.lower(), None)
        if versions is None:
            return _not_found(name)
        deleted = _Deleted(versions, int(time.time()))
        self._deleted[name.lower()] = deleted
        return _Response(200, self._deleted_bundle(deleted))

    def _list(self, secrets: list[list[_Version]], query: dict[str, str]) -> _Response:
        items = [self._item(vs[-1], versioned=False) for vs in secrets]
        return self._page(items, query, "secrets")

    def _list_versions(self, name: str, query: dict[str, str]) -> _Response:
        versions = self._secrets.get(name.lower())
        if not versions:
            return _not_found(name)
        return self._page([self._item(v, versioned=True) for v in versions], query, f"secrets/{name}/versions")

    def _page(self, items: list[dict[str, Any]], query: dict[str, str], path: str) -> _Response:
        try:
            size = int(query.get("maxresults") or _MAX_PAGE)
            start = int(query.get("$skiptoken") or 0)
        except ValueError as exc:
            raise _BadRequest("Invalid maxresults or $skiptoken.") from exc
        if not 1 <= size <= _MAX_PAGE or start < 0:
            raise _BadRequest(f"maxresults must be between 1 and {_MAX_PAGE}.")
        end = start + size
        next_link = None
        if end < len(items):
            api = query["api-version"]
            next_link = f"{self._url}{path}?api-version={api}&$skiptoken={end}&maxresults={size}"
        return _Response(200, {"value": items[start:end], "nextLink": next_link})

    def _attributes(self, v: _Version) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "enabled": v.enabled,
            "created": v.created,
            "updated": v.updated,
            "recoveryLevel": _RECOVERY_LEVEL,
            "recoverableDays": _RECOVERABLE_DAYS,
        }
        if v.not_before is not None:
            attrs["nbf"] = v.not_before
        if v.expires is not None:
            attrs["exp"] = v.expires
        return attrs

    def _bundle(self, v: _Version, *, with_value: bool = True) -> dict[str, Any]:
        bundle = self._item(v, versioned=True)
        if with_value:
            bundle["value"] = v.value
        return bundle

    def _item(self, v: _Version, *, versioned: bool) -> dict[str, Any]:
        ident = f"{self._url}secrets/{v.name}" + (f"/{v.version}" if versioned else "")
        item: dict[str, Any] = {"id": ident, "attributes": self._attributes(v)}
        if v.content_type is not None:
            item["contentType"] = v.content_type
        if v.tags:
            item["tags"] = dict(v.tags)
        return item

    def _deleted_bundle(self, deleted: _Deleted) -> dict[str, Any]:
        latest = deleted.versions[-1]
        bundle = self._bundle(latest, with_value=False)
        bundle["recoveryId"] = f"{self._url}deletedsecrets/{latest.name}"
        bundle["deletedDate"] = deleted.deleted_date
        bundle["scheduledPurgeDate"] = deleted.deleted_date + _RECOVERABLE_DAYS * 86400
        return bundle

    @staticmethod
    def _json_object(body: bytes) -> dict[str, Any]:
        try:
            params = json.loads(body or b"{}")
        except ValueError as exc:
            raise _BadRequest("The request body is not valid JSON.") from exc
        if not isinstance(params, dict):
            raise _BadRequest("The request body must be a JSON object.")
        return params

    @staticmethod
    def _attributes_param(params: dict[str, Any]) -> dict[str, Any]:
        attrs = params.get("attributes") or {}
        if not isinstance(attrs, dict):
            raise _BadRequest("Property 'attributes' must be an object.")
        if "enabled" in attrs and not isinstance(attrs["enabled"], bool | None):
            raise _BadRequest("Property 'attributes.enabled' must be a boolean.")
        return attrs

    @staticmethod
    def _opt_str(params: dict[str, Any], key: str) -> str | None:
        value = params.get(key)
        if value is not None and not isinstance(value, str):
            raise _BadRequest(f"Property '{key}' must be a string.")
        return value

    @staticmethod
    def _tags_param(params: dict[str, Any]) -> dict[str, str] | None:
        tags = params.get("tags")
        if tags is not None and not (
            isinstance(tags, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())
        ):
            raise _BadRequest("Property 'tags' must map strings to strings.")
        return tags
