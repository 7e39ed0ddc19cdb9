"""The local Key Vault simulator, exercised through the real azure-keyvault-secrets SecretClient."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.keyvault.secrets import SecretClient
from azure.keyvault.secrets._shared import HttpChallengeCache

from tools.keyvault_sim import (
    DEFAULT_TENANT_ID,
    DEFAULT_TOKEN,
    KEYVAULT_SCOPE,
    LocalKeyVault,
    StaticTokenCredential,
)

REPO = Path(__file__).resolve().parents[1]
NAME = "klaviyo-api-key"
VALUE = "pk_test_0123456789abcdef"


@pytest.fixture(autouse=True)
def _fresh_challenge_cache() -> Iterator[None]:
    # The SDK caches challenges per host:port process-wide; a reused ephemeral port would skip the 401 round trip.
    HttpChallengeCache.clear()
    yield
    HttpChallengeCache.clear()


@pytest.fixture
def vault() -> Iterator[LocalKeyVault]:
    with LocalKeyVault() as kv:
        kv.set_secret(NAME, VALUE)
        yield kv


def make_client(vault: LocalKeyVault, credential: TokenCredential | None = None, **kwargs: object) -> SecretClient:
    return SecretClient(
        vault.url,
        credential or StaticTokenCredential(),
        verify_challenge_resource=False,
        connection_verify=vault.ca_cert_path,
        **kwargs,
    )


@pytest.fixture
def secret_client(vault: LocalKeyVault) -> Iterator[SecretClient]:
    with make_client(vault) as c:
        yield c


def test_get_secret(vault: LocalKeyVault, secret_client: SecretClient) -> None:
    secret = secret_client.get_secret(NAME)

    (version,) = vault.versions(NAME)
    assert secret.value == VALUE
    assert secret.name == NAME
    assert secret.properties.version == version
    assert secret.id == f"{vault.url}secrets/{NAME}/{version}"
    assert secret.properties.vault_url == vault.url.rstrip("/")
    assert secret.properties.enabled is True
    assert secret.properties.created_on is not None
    assert secret.properties.recovery_level == "Recoverable+Purgeable"
    # Key Vault names are case-insensitive.
    assert secret_client.get_secret(NAME.upper()).value == VALUE


def test_rotated_secret_returns_new_value_and_version(vault: LocalKeyVault, secret_client: SecretClient) -> None:
    old = secret_client.get_secret(NAME)

    new_version = vault.set_secret(NAME, "pk_rotated")
    rotated = secret_client.get_secret(NAME)

    assert rotated.value == "pk_rotated"
    assert rotated.properties.version == new_version != old.properties.version
    assert secret_client.get_secret(NAME, old.properties.version).value == VALUE

    via_sdk = secret_client.set_secret(NAME, "pk_rotated_again", content_type="text/plain", tags={"by": "test"})
    assert via_sdk.value == "pk_rotated_again"
    assert vault.versions(NAME) == [old.properties.version, new_version, via_sdk.properties.version]
    latest = secret_client.get_secret(NAME)
    assert (latest.value, latest.properties.content_type, latest.properties.tags) == (
        "pk_rotated_again",
        "text/plain",
        {"by": "test"},
    )


def test_missing_secret_is_resource_not_found(vault: LocalKeyVault, secret_client: SecretClient) -> None:
    with pytest.raises(ResourceNotFoundError) as missing:
        secret_client.get_secret("no-such-secret")
    assert missing.value.status_code == 404
    assert missing.value.error is not None and missing.value.error.code == "SecretNotFound"
    assert "(name/id) no-such-secret was not found" in str(missing.value)

    with pytest.raises(ResourceNotFoundError):
        secret_client.get_secret(NAME, "0" * 32)

    vault.delete_secret(NAME)
    with pytest.raises(ResourceNotFoundError):
        secret_client.get_secret(NAME)


def test_disabled_secret_is_403_secret_disabled(vault: LocalKeyVault, secret_client: SecretClient) -> None:
    vault.disable_secret(NAME)

    with pytest.raises(HttpResponseError) as disabled:
        secret_client.get_secret(NAME)

    err = disabled.value
    assert err.status_code == 403
    assert err.error is not None and err.error.code == "Forbidden"
    assert err.error.innererror == {"code": "SecretDisabled"}
    assert "Operation get is not allowed on a disabled secret." in str(err)

    # Disabling through the SDK hits the same path; a rotation brings an enabled version back.
    vault.set_secret(NAME, "pk_new")
    secret_client.update_secret_properties(NAME, enabled=False)
    with pytest.raises(HttpResponseError, match="SecretDisabled|disabled secret"):
        secret_client.get_secret(NAME)


def test_denied_access_is_403_forbidden_by_rbac(vault: LocalKeyVault, secret_client: SecretClient) -> None:
    vault.deny_access(True)

    with pytest.raises(HttpResponseError) as denied:
        secret_client.get_secret(NAME)
    assert denied.value.status_code == 403
    assert denied.value.error is not None and denied.value.error.innererror == {"code": "ForbiddenByRbac"}
    assert "Caller is not authorized to perform action on resource" in str(denied.value)
    assert "secrets/getSecret/action" in str(denied.value)
    with pytest.raises(HttpResponseError, match="ForbiddenByRbac"):
        secret_client.set_secret(NAME, "nope")

    vault.deny_access(False)
    assert secret_client.get_secret(NAME).value == VALUE


def test_challenge_happens_once_then_bearer_token_is_sent(vault: LocalKeyVault) -> None:
    credential = StaticTokenCredential()
    with make_client(vault, credential) as client:
        client.get_secret(NAME)
        client.get_secret(NAME)

    seen = vault.requests_seen
    assert [(r.status, r.token) for r in seen] == [(401, None), (200, DEFAULT_TOKEN), (200, DEFAULT_TOKEN)]
    assert all(r.query["api-version"] for r in seen)
    assert vault.tokens_seen == [DEFAULT_TOKEN, DEFAULT_TOKEN]
    assert vault.secret_get_count(NAME) == 2
    # The SDK derived scope and tenant from our WWW-Authenticate challenge and asked for one token only.
    assert [(t.scopes, t.tenant_id) for t in credential.requests] == [((KEYVAULT_SCOPE,), DEFAULT_TENANT_ID)]
    # HTTP/1.1 keep-alive: the challenge and both reads share one TLS connection.
    assert len({r.connection for r in seen}) == 1


def test_wrong_token_is_rejected(vault: LocalKeyVault) -> None:
    client = make_client(vault, StaticTokenCredential("not-the-token"))
    with client, pytest.raises(ClientAuthenticationError) as rejected:
        client.get_secret(NAME)

    assert rejected.value.status_code == 401
    assert {r.status for r in vault.requests_seen} == {401}
    assert set(vault.tokens_seen) == {"not-the-token"}
    assert vault.secret_get_count(NAME) == 0


def test_accepted_token_is_configurable() -> None:
    with LocalKeyVault(accepted_token="custom-token") as kv:
        kv.set_secret(NAME, VALUE)
        with make_client(kv, StaticTokenCredential("custom-token")) as client:
            assert client.get_secret(NAME).value == VALUE
        with make_client(kv) as client, pytest.raises(ClientAuthenticationError):
            client.get_secret(NAME)


def test_challenge_resource_check_must_be_disabled(vault: LocalKeyVault) -> None:
    # Documents why clients need verify_challenge_resource=False: 127.0.0.1 is not under vault.azure.net.
    client = SecretClient(vault.url, StaticTokenCredential(), connection_verify=vault.ca_cert_path)
    with client, pytest.raises(ValueError, match="verify_challenge_resource"):
        client.get_secret(NAME)
    assert vault.tokens_seen == []


def test_tls_without_local_ca_fails(vault: LocalKeyVault) -> None:
    client = SecretClient(vault.url, StaticTokenCredential(), verify_challenge_resource=False, retry_total=0)
    with client, pytest.raises(ServiceRequestError) as failed:
        client.get_secret(NAME)

    assert isinstance(failed.value.inner_exception, requests.exceptions.SSLError)
    assert "CERTIFICATE_VERIFY_FAILED" in str(failed.value)
    assert vault.requests_seen == []


def test_server_certificate_verifies_against_local_ca_only(vault: LocalKeyVault) -> None:
    port = int(vault.url.rsplit(":", 1)[1].rstrip("/"))
    trusting = ssl.create_default_context(cafile=vault.ca_cert_path)
    for hostname in ("127.0.0.1", "localhost"):
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        with trusting.wrap_socket(raw, server_hostname=hostname) as tls:
            assert tls.version() in {"TLSv1.2", "TLSv1.3"}

    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with raw, pytest.raises(ssl.SSLCertVerificationError):
        ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")


def test_raw_protocol_challenge_and_api_version(vault: LocalKeyVault) -> None:
    url = f"{vault.url}secrets/{NAME}"
    auth = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
    # verify per request: REQUESTS_CA_BUNDLE in the environment would override a Session-level verify.
    ca = vault.ca_cert_path
    challenge = requests.get(url, params={"api-version": "7.4"}, verify=ca, timeout=5)
    no_version = requests.get(url, headers=auth, verify=ca, timeout=5)
    ok = requests.get(url, params={"api-version": "7.4"}, headers=auth, verify=ca, timeout=5)

    assert challenge.status_code == 401
    assert challenge.headers["WWW-Authenticate"] == (
        f'Bearer authorization="https://login.microsoftonline.com/{DEFAULT_TENANT_ID}", '
        'resource="https://vault.azure.net"'
    )
    assert challenge.json()["error"]["code"] == "Unauthorized"
    assert no_version.status_code == 400
    assert no_version.json()["error"]["code"] == "BadParameter"
    assert ok.status_code == 200
    assert ok.json()["value"] == VALUE


def test_invalid_secret_names_are_rejected(vault: LocalKeyVault, secret_client: SecretClient) -> None:
    with pytest.raises(HttpResponseError) as bad:
        secret_client.get_secret("bad_name")
    assert bad.value.status_code == 400
    assert bad.value.error is not None and bad.value.error.code == "BadParameter"

    for name in ("bad_name", "", "x" * 128, "spaced name"):
        with pytest.raises(ValueError):
            vault.set_secret(name, "v")
    vault.set_secret("x" * 127, "longest allowed")
    assert secret_client.get_secret("x" * 127).value == "longest allowed"


def test_list_secrets_pages_through_next_link(vault: LocalKeyVault, secret_client: SecretClient) -> None:
    names = [f"secret-{i:02d}" for i in range(30)]
    for name in names:
        vault.set_secret(name, name)

    listed = [p.name for p in secret_client.list_properties_of_secrets()]

    assert listed == sorted([NAME, *names])
    pages = [r for r in vault.requests_seen if r.path == "/secrets" and r.status == 200]
    assert [r.query.get("$skiptoken") for r in pages] == [None, "25"]
    vault.set_secret(NAME, "second")
    assert [p.version for p in secret_client.list_properties_of_secret_versions(NAME)] == vault.versions(NAME)


def test_delete_recover_and_purge_through_sdk(vault: LocalKeyVault, secret_client: SecretClient) -> None:
    poller = secret_client.begin_delete_secret(NAME)
    poller.wait()
    deleted = poller.result()
    assert deleted.recovery_id == f"{vault.url}deletedsecrets/{NAME}"
    with pytest.raises(ResourceNotFoundError):
        secret_client.get_secret(NAME)
    with pytest.raises(ResourceExistsError, match="deleted but recoverable"):
        secret_client.set_secret(NAME, "reuse")

    secret_client.begin_recover_deleted_secret(NAME).wait()
    assert secret_client.get_secret(NAME).value == VALUE

    secret_client.begin_delete_secret(NAME).wait()
    secret_client.purge_deleted_secret(NAME)
    with pytest.raises(ResourceNotFoundError):
        secret_client.get_deleted_secret(NAME)
    assert secret_client.set_secret(NAME, "fresh").value == "fresh"


def test_stop_refuses_further_requests() -> None:
    kv = LocalKeyVault()
    kv.set_secret(NAME, VALUE)
    kv.start()
    with make_client(kv, retry_total=0) as client:
        assert client.get_secret(NAME).value == VALUE
        kv.stop()
        with pytest.raises((ServiceRequestError, ServiceResponseError)):
            client.get_secret(NAME)
    kv.stop()
    with pytest.raises(RuntimeError):
        kv.start()


def test_static_token_credential_is_a_token_credential() -> None:
    credential = StaticTokenCredential("t", expires_in=60)
    assert isinstance(credential, TokenCredential)
    token = credential.get_token(KEYVAULT_SCOPE, tenant_id="tenant")
    assert token.token == "t"
    assert credential.get_token_info(KEYVAULT_SCOPE).token == "t"
    assert [r.tenant_id for r in credential.requests] == ["tenant", None]


@pytest.mark.timeout(20)
def test_cli_serves_seeded_secrets() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.keyvault_sim", "--port", "0", "--secret", f"{NAME}={VALUE}", "--secret", "b=x=y"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        ca_path = proc.stdout.readline().strip()
        assert url.startswith("https://127.0.0.1:") and url.endswith("/")
        assert Path(ca_path).is_file()
        with SecretClient(
            url, StaticTokenCredential(), verify_challenge_resource=False, connection_verify=ca_path
        ) as client:
            assert client.get_secret(NAME).value == VALUE
            assert client.get_secret("b").value == "x=y"
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert not Path(ca_path).exists()
