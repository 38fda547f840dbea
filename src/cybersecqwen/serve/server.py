"""Start the server: check the binding and the key, load the backend and the catalogs, run uvicorn."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
from pathlib import Path

from cybersecqwen.answering.loading import load_service, serving_backend
from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.serve.app import MAX_HEADER_BYTES, ServerSettings, create_app

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_binding(host: str, api_key: str | None) -> None:
    if not is_loopback(host) and not api_key:
        raise CybersecqwenError(f"binding {host} exposes the model beyond this machine: set an API key (--api-key or "
                                "CYBERSECQWEN_API_KEY), or bind 127.0.0.1")


def check_proxies(proxies: list[str]) -> tuple[str, ...]:
    """--trusted-proxy values as uvicorn reads them: addresses or networks, never a wildcard (then any client could
    name itself in X-Forwarded-For)."""
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise CybersecqwenError(f"--trusted-proxy {proxy!r} is not an IP address or network (e.g. 10.0.0.5 or "
                                    "10.0.0.0/24); name the proxy in front of this server") from None
    return tuple(proxies)


def build_app(model: str, backend_kind: str, settings: ServerSettings, data_dir: Path | None = None, download: bool = False,
              chat_only: bool = False, heads: Path | None = None, no_model: bool = False):
    if no_model and (heads is None or chat_only):
        raise CybersecqwenError("--no-model serves the structured endpoints from the heads: pass --heads DIR (and not --chat-only)")
    backend = serving_backend(model, backend_kind, no_model)
    try:
        service = load_service(backend, data_dir, download, chat_only, heads, model)
    except BaseException:
        if backend is not None:
            backend.close()
        raise
    return create_app(backend, service, settings), backend


READ_TIMEOUT_S = 15.0  # a client gets this long to send its request line, headers and body
FIRST_BYTE_S = 3.0  # a new connection that has sent nothing by then is closed (idle sockets cannot hold the server)
MAX_CONNECTIONS = 512  # open connections in all; more are answered 503 and closed at once
MAX_PER_CLIENT = 128  # open connections from one address (every local client shares 127.0.0.1: see connection_made)
KEEP_ALIVE_S = 5
CAP_BODY = b'{"error": {"message": "too many open connections; retry shortly", "type": "unavailable", "code": 503}}'


def bounded_protocol(read_timeout: float, on_refusal=lambda status, reason, client: None, first_byte: float = FIRST_BYTE_S):
    """uvicorn's h11 protocol, bounded where uvicorn is not:
    - a deadline on reading each request (uvicorn bounds idle keep-alive connections but not a client that dribbles
      its headers or body: slowloris), and a shorter one for a new connection's first byte;
    - a cap on open connections, in all and per client address (uvicorn's own limit counts idle sockets against every
      request, so 64 silent sockets refused everyone, health checks included). Budgets go by connection state, not
      address alone: every local client is 127.0.0.1, so a cap by address refused the whole machine once one client
      held 128 sockets. A connection arriving over a cap closes the oldest connection of that address (of any, for
      the total cap) that has no request running: idle, or still sending its request line and headers. Only when
      every such connection is running a request is the newcomer answered 503 and closed;
    - every refusal it makes (these 503s, h11's 400s for malformed requests) reported to `on_refusal`, which counts
      it in /metrics and writes it to the audit log like any answer."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class BoundedH11Protocol(H11Protocol):
        _read_timer = None
        _first_byte_timer = None

        def _arm(self) -> None:
            self._read_timer = self.loop.call_later(read_timeout, self._timed_out, "slow request")

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _host(self) -> str | None:
            return self.client[0] if self.client else None

        _opened = 0.0

        def busy(self) -> bool:
            """A request of this connection is running (headers in, response not finished)."""
            return self.cycle is not None and not self.cycle.response_complete

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._opened = self.loop.time()
            host = self._host()
            open_ = [c for c in self.connections if not getattr(c, "transport", None) or not c.transport.is_closing()]
            mine = [c for c in open_ if getattr(c, "client", None) and c.client[0] == host]
            for over, pool, reason in ((len(mine) > MAX_PER_CLIENT, mine, "per-client connection cap"),
                                       (len(open_) > MAX_CONNECTIONS, open_, "connection cap")):
                if over and not self._evict_oldest_waiting(pool, reason):
                    transport.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
                                    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(CAP_BODY), CAP_BODY))
                    transport.close()
                    on_refusal(503, reason, host)
                    return
            self._arm()
            self._first_byte_timer = self.loop.call_later(first_byte, self._timed_out, "idle connection")

        def _evict_oldest_waiting(self, pool, reason: str) -> bool:
            """Close the oldest connection of `pool` with no request running; False when every one has one."""
            waiting = [c for c in pool if c is not self and not getattr(c, "busy", lambda: True)()]  # pool: open ones
            if not waiting:
                return False
            oldest = min(waiting, key=lambda c: c._opened)
            on_refusal(None, f"closed for a newer connection: {reason}, it had no request running", oldest._host())
            oldest._disarm()
            oldest.transport.close()
            return True

        def data_received(self, data: bytes) -> None:
            if self._first_byte_timer is not None:
                self._first_byte_timer.cancel()
                self._first_byte_timer = None
            if self._read_timer is None and self.conn.their_state is h11.IDLE:  # the next request on a kept-alive connection
                self._arm()
            super().data_received(data)
            if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):  # the request is in (or the connection is ending)
                self._disarm()

        def send_400_response(self, msg: str) -> None:
            on_refusal(400, f"malformed HTTP: {msg[:120]}", self._host())
            super().send_400_response(msg)

        def connection_lost(self, exc) -> None:
            self._disarm()
            if self._first_byte_timer is not None:
                self._first_byte_timer.cancel()
                self._first_byte_timer = None
            super().connection_lost(exc)

        def _timed_out(self, reason: str) -> None:
            self._read_timer = self._first_byte_timer = None
            if not self.transport.is_closing():
                on_refusal(None, reason, self._host())  # closed without an answer: counted, not an HTTP status
                self.transport.close()

    return BoundedH11Protocol


def uvicorn_config(app, host: str, port: int, read_timeout: float = READ_TIMEOUT_S):
    """The server's uvicorn settings (used by `serve` and by the tests' live server): bounded request reads,
    connections, keep-alive and header size. The client address is the socket's; X-Forwarded-For is read only from
    the proxies named in the settings' `trusted_proxies` (uvicorn by default trusts it from 127.0.0.1, i.e. from every local
    client, which let any of them write the audit log's client)."""
    import uvicorn

    state = getattr(app, "state", None)
    refusal = getattr(state, "refusal", None) or (lambda status, reason, client: None)
    trusted_proxies = getattr(getattr(state, "settings", None), "trusted_proxies", ())
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                          http=bounded_protocol(read_timeout, refusal), limit_concurrency=None,
                          timeout_keep_alive=KEEP_ALIVE_S, h11_max_incomplete_event_size=MAX_HEADER_BYTES,
                          proxy_headers=bool(trusted_proxies), forwarded_allow_ips=list(trusted_proxies) or None)


class Starting:
    """The ASGI app from the moment the port is bound until the model, heads and catalogs are loaded: liveness
    (`/healthz`) answers 200, readiness (`/readyz`) and every other path 503 with Retry-After, so a load balancer sends
    nothing to a replica that cannot answer yet. Once loaded, every request goes to the real app."""

    def __init__(self, settings: ServerSettings) -> None:
        from types import SimpleNamespace

        self.app = None
        self.failed: str | None = None
        self.state = SimpleNamespace(settings=settings, refusal=self.refusal)  # what uvicorn_config reads

    def refusal(self, status: int, reason: str, client) -> None:
        if self.app is not None:
            self.app.state.refusal(status, reason, client)

    async def __call__(self, scope, receive, send) -> None:
        if self.app is not None:
            return await self.app(scope, receive, send)
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["path"] == "/healthz":
            status, body = 200, {"status": "ok"}
        elif scope["path"] == "/readyz":
            status, body = 503, {"status": "failed" if self.failed else "loading", "error": self.failed}
        else:
            status, body = 503, {"error": {"message": self.failed or "the model and catalogs are loading; retry shortly",
                                           "type": "unavailable", "code": 503}}
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"retry-after", b"5")]})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})


def draining_server(config):
    """uvicorn's server, exiting 0 after a graceful stop: on SIGTERM/SIGINT uvicorn stops taking connections and
    finishes the running requests, then re-raises the signal so the process dies by it (exit -15); a replica that
    drained cleanly has succeeded, and says so with 0."""
    import contextlib

    import uvicorn

    class Draining(uvicorn.Server):
        stopped_by: list = []

        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                try:
                    yield
                finally:
                    self.stopped_by = list(self._captured_signals)
                    self._captured_signals.clear()

    return Draining(config)


def per_process(path: Path | None) -> Path | None:
    """An audit log path with `{pid}` or `{host}` in it names one file per replica (replicas never share a file)."""
    if path is None:
        return None
    return Path(str(path).replace("{pid}", str(os.getpid())).replace("{host}", socket.gethostname()))


def serve(model: str, backend_kind: str, host: str, port: int, settings: ServerSettings, data_dir: Path | None = None,
          download: bool = False, chat_only: bool = False, heads=None, no_model: bool = False) -> None:
    """Bind the port, answer liveness at once and readiness when loaded (the model, heads and catalogs load in a
    thread meanwhile; `heads` is a folder, or a function choosing one there, which may build the default heads), serve; on SIGTERM or SIGINT stop taking connections, finish the running requests (each is
    bounded by --timeout) and close the model."""
    import threading

    check_binding(host, settings.api_key)
    settings.allowed_hosts = tuple(dict.fromkeys((*settings.allowed_hosts, host)))  # the bound address answers too
    settings.audit_log = per_process(settings.audit_log)
    with socket.socket() as probe:  # a clear error before loading a model, not a traceback after
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CybersecqwenError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    starting = Starting(settings)
    config = uvicorn_config(starting, host, port)
    config.timeout_graceful_shutdown = settings.timeout_s + 5  # a running request ends by its own timeout first
    server = draining_server(config)
    loaded: dict = {}

    def load() -> None:
        try:
            folder = heads() if callable(heads) else heads
            loaded["app"], loaded["backend"] = build_app(model, backend_kind, settings, data_dir, download, chat_only, folder, no_model)
            starting.app = loaded["app"]
            log.warning("ready: %s", "heads only" if no_model else model)
        except BaseException as exc:  # noqa: BLE001 - any failure: readiness says it, the process exits non-zero
            loaded["error"] = exc
            starting.failed = str(exc)
            server.should_exit = True

    threading.Thread(target=load, name="load-model", daemon=True).start()
    try:
        server.run()
        if server.stopped_by:
            log.warning("stopped by signal %s after finishing the running requests", ", ".join(str(int(sig)) for sig in server.stopped_by))
    finally:
        app, backend = loaded.get("app"), loaded.get("backend")
        if backend is not None:
            with app.state.model_lock:  # a timed-out request may still be finishing on the model
                backend.close()
    if "error" in loaded:
        error = loaded["error"]
        raise error if isinstance(error, CybersecqwenError) else CybersecqwenError(f"the server could not load: {error}")
