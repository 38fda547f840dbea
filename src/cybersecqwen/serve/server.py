"""Start the server: check the binding and the key, load the backend and the catalogs, run uvicorn."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

from cybersecqwen.answering.loading import load_service, serving_backend
from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.serve.app import MAX_HEADER_BYTES, ServerSettings, create_app


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
MAX_PER_CLIENT = 128  # open connections from one address; a flood from one client cannot lock out the others
KEEP_ALIVE_S = 5
CAP_BODY = b'{"error": {"message": "too many open connections; retry shortly", "type": "unavailable", "code": 503}}'


def bounded_protocol(read_timeout: float, on_refusal=lambda status, reason, client: None, first_byte: float = FIRST_BYTE_S):
    """uvicorn's h11 protocol, bounded where uvicorn is not:
    - a deadline on reading each request (uvicorn bounds idle keep-alive connections but not a client that dribbles
      its headers or body: slowloris), and a shorter one for a new connection's first byte;
    - a cap on open connections, in all and per client address, answered with a 503 and closed at once (uvicorn's own
      limit counts idle sockets against every request, so 64 silent sockets refused everyone, health checks included);
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

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            host = self._host()
            same = sum(1 for c in self.connections if getattr(c, "client", None) and c.client[0] == host)
            if len(self.connections) > MAX_CONNECTIONS or same > MAX_PER_CLIENT:
                transport.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
                                b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(CAP_BODY), CAP_BODY))
                transport.close()
                on_refusal(503, "per-client connection cap" if same > MAX_PER_CLIENT else "connection cap", host)
                return
            self._arm()
            self._first_byte_timer = self.loop.call_later(first_byte, self._timed_out, "idle connection")

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


def serve(model: str, backend_kind: str, host: str, port: int, settings: ServerSettings, data_dir: Path | None = None,
          download: bool = False, chat_only: bool = False, heads: Path | None = None, no_model: bool = False) -> None:
    import uvicorn

    check_binding(host, settings.api_key)
    settings.allowed_hosts = tuple(dict.fromkeys((*settings.allowed_hosts, host)))  # the bound address answers too
    with socket.socket() as probe:  # a clear error before loading a model, not a traceback after
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CybersecqwenError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    app, backend = build_app(model, backend_kind, settings, data_dir, download, chat_only, heads, no_model)
    try:
        uvicorn.Server(uvicorn_config(app, host, port)).run()
    finally:
        with app.state.model_lock:  # a timed-out request may still be finishing on the model
            if backend is not None:
                backend.close()
