"""A stand-in for the Azure Functions host (Core Tools cannot be installed here): indexes
function_app, routes HTTP requests to its user functions with real azure.functions objects,
delivers queue messages, fires the timer and reports dropped blobs.

`python -m tools.functions_host` runs it as a local HTTP server on the real Azurite, the Klaviyo
simulator and the local Key Vault, for trying the API with curl (see the README). It watches the
segments container in place of the blob trigger's Event Grid subscription, and stops everything it
started (Azurite's process too) when it is interrupted or terminated."""

from __future__ import annotations

import argparse
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import azure.functions as func
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueMessage, TextBase64DecodePolicy

import function_app
from shared.control import Services
from shared.settings import RUNS_QUEUE
from shared.storage import queue_client
from tools import local_sign_in

# The worker indexes the app once per process; so does this host.
FUNCTIONS = {f.get_function_name(): f for f in function_app.app.get_functions()}


class InvocationContext(func.Context):
    """The per-invocation context the host passes to a function."""

    def __init__(self, function_name: str) -> None:
        self._id, self._name, self._local = str(uuid.uuid4()), function_name, threading.local()

    invocation_id = property(lambda self: self._id)
    function_name = property(lambda self: self._name)
    function_directory = property(lambda self: ".")
    trace_context = property(lambda self: None)
    retry_context = property(lambda self: None)
    thread_local_storage = property(lambda self: self._local)


def _route_pattern(template: str) -> re.Pattern[str]:
    pattern = re.sub(r"/\{(\w+)\?\}", r"(?:/(?P<\1>[^/]+))?", template)
    pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
    return re.compile(f"^{pattern}$")


class LocalFunctionsHost:
    """Calls the app's user functions the way the Functions host does."""

    def __init__(self, services: Services, base_url: str = "http://localhost:7071") -> None:
        self.services, self.base_url = services, base_url
        self.user = {name: f.get_user_function() for name, f in FUNCTIONS.items()}
        self.routes: list[tuple[re.Pattern[str], set[str], str]] = []
        for name, function in FUNCTIONS.items():
            trigger = function.get_trigger()
            if trigger.type == "httpTrigger":
                methods = {str(m) for m in trigger.methods}
                self.routes.append((_route_pattern(trigger.route), methods, name))
        self.queue = queue_client(services.settings.storage, RUNS_QUEUE, message_decode_policy=TextBase64DecodePolicy())

    def http(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> func.HttpResponse:
        """`path` without the /api/ prefix, as in a function route; URL-decoding as the host does."""
        from urllib.parse import unquote

        segments = [unquote(s) for s in path.strip("/").split("/")]
        for pattern, methods, name in self.routes:
            match = pattern.match("/".join(s.replace("/", "\x00") for s in segments))
            if match is None:
                continue
            if method not in methods:
                return func.HttpResponse(b'{"error": "method not allowed"}', status_code=405)
            params = {k: v.replace("\x00", "/") for k, v in match.groupdict().items() if v is not None}
            request = func.HttpRequest(
                method, f"{self.base_url}/api/{path.strip('/')}", headers=headers or {}, route_params=params, body=body
            )
            return self.user[name](request)
        return func.HttpResponse(b'{"error": "no such route"}', status_code=404)

    def deliver_queue(self, max_messages: int = 32) -> int:
        """Runs every message on the runs queue through the queue function; returns how many."""
        delivered = 0
        while messages := list(self.queue.receive_messages(max_messages=max_messages, visibility_timeout=600)):
            for message in messages:
                self.deliver(message)
                delivered += 1
        return delivered

    def deliver(self, message: QueueMessage) -> None:
        """Hands one received message to the queue function and deletes it once the function returns; a
        function that raises leaves it on the queue (it comes back after its visibility timeout)."""
        self.user["run_export"](
            func.QueueMessage(id=message.id, body=message.content.encode()), InvocationContext("run_export")
        )
        self.queue.delete_message(message)

    def fire_timer(self) -> None:
        self.user["scheduled_exports"](TimerRequest())

    def blob_dropped(self, container: str, blob: str) -> None:
        self.user["segment_dropped"](self.services.segments.get_blob_client(container, blob))


class SegmentWatcher:
    """The local stand-in for the blob trigger's Event Grid subscription: lists the segments container
    and hands each blob whose etag it has not seen (created or overwritten since) to `segment_dropped`."""

    def __init__(self, host: LocalFunctionsHost, container: str) -> None:
        self.host, self.container = host, container
        self.client = host.services.segments.get_container_client(container)
        # Blobs already there when watching starts were not created after the subscription: not fired.
        self._seen = self._etags()

    def _etags(self) -> dict[str, str]:
        return {blob.name: blob.etag for blob in self.client.list_blobs()}

    def poll(self) -> list[str]:
        """Fires the blob function for each new or changed blob; returns their names."""
        current = self._etags()
        dropped = [name for name, etag in current.items() if self._seen.get(name) != etag]
        self._seen = current
        for name in dropped:
            try:
                self.host.blob_dropped(self.container, name)
            except Exception as exc:  # one blob's failure must not stop the others (the host logs it too)
                print(f"segment_dropped {name}: {type(exc).__name__}: {exc}", flush=True)
        return dropped


def _every(stop: threading.Event, seconds: float, label: str, work: Callable[[], object]) -> threading.Thread:
    """Runs `work` every `seconds` until `stop`, in a daemon thread; a failure is printed, not fatal."""

    def loop() -> None:
        while not stop.is_set():
            try:
                work()
            except Exception as exc:  # keep serving; a run's record says what failed
                print(f"{label}: {type(exc).__name__}: {exc}", flush=True)
            stop.wait(seconds)

    thread = threading.Thread(target=loop, name=label, daemon=True)
    thread.start()
    return thread


def serve(
    host: LocalFunctionsHost, port: int, poll_seconds: float = 1.0, watch_seconds: float | None = 2.0
) -> Callable[[], None]:
    """Serves /api/... over HTTP on 127.0.0.1, delivers queue messages in the background and (unless
    `watch_seconds` is None) polls the segments container for dropped blobs."""
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0]
            signing_in = local_sign_in.answer(self.path) if path.startswith("/.auth/") else None
            if signing_in is not None:  # the local stand-in for App Service Authentication's sign-in
                response = func.HttpResponse(
                    signing_in.body, status_code=signing_in.status, headers=signing_in.headers, mimetype="text/html"
                )
            elif path == "/admin/functions/scheduled_exports" and self.command == "POST":
                host.fire_timer()  # the real host's admin endpoint for firing a timer by hand
                response = func.HttpResponse(b"", status_code=202)
            elif not path.startswith("/api/"):
                response = func.HttpResponse(b'{"error": "not found"}', status_code=404)
            else:
                headers = local_sign_in.with_principal(dict(self.headers.items()))
                response = host.http(self.command, path[len("/api/") :], body, headers)
            try:
                self._send(response)
            except (BrokenPipeError, ConnectionResetError):  # the client went away (a browser closing a page)
                self.close_connection = True

        def _send(self, response: func.HttpResponse) -> None:
            payload = response.get_body()
            self.send_response(response.status_code)
            for key, value in response.headers.items():
                if key.lower() != "content-length":
                    self.send_header(key, value)
            if payload:
                self.send_header("content-type", response.mimetype or "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_PUT = do_POST = do_DELETE = _handle

        def log_message(self, fmt: str, *args: Any) -> None:
            print(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else ''}", flush=True)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    threads = [_every(stop, poll_seconds, "queue worker", host.deliver_queue)]
    if watch_seconds is not None:  # its own thread: a run the queue worker executes may take minutes
        watcher = SegmentWatcher(host, host.services.settings.segments_container)
        threads.append(_every(stop, watch_seconds, "segment watcher", watcher.poll))

    def shutdown() -> None:
        stop.set()
        server.shutdown()
        server.server_close()
        for thread in threads:  # a run in progress is not waited for long: its message comes back
            thread.join(timeout=5)

    return shutdown


class HostStopped(Exception):
    """SIGTERM, SIGHUP or SIGINT: unwinds main() so the stack stops its children (Azurite) and temp files."""


def _stop_on_signals() -> None:
    stop_signals = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

    def stop(signum: int, _frame: object) -> None:
        for other in stop_signals:  # a second signal must not interrupt the clean-up
            signal.signal(other, signal.SIG_IGN)
        raise HostStopped(signal.Signals(signum).name)

    for each in stop_signals:
        signal.signal(each, stop)


def main() -> None:
    from tools.local_stack import LocalStack

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=7071)
    args = parser.parse_args()
    _stop_on_signals()
    try:
        with LocalStack() as stack:
            stack.add_sample_segment()  # before the watcher starts: it fires nothing
            host = LocalFunctionsHost(stack.services, f"http://127.0.0.1:{args.port}")
            shutdown = serve(host, args.port)
            try:
                print(stack.describe(f"http://127.0.0.1:{args.port}"), flush=True)
                while True:
                    time.sleep(3600)
            finally:
                shutdown()
    except HostStopped as stopped:
        print(f"{stopped}: stopped the host, Azurite, the simulator and the vault", flush=True)


if __name__ == "__main__":
    main()
