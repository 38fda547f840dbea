"""Start the server: check the binding and the key, load the backend and the catalogs, run uvicorn."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.serve.app import ServerSettings, create_app


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


def load_service(backend, data_dir: Path | None, download: bool, chat_only: bool, heads: Path | None = None,
                 model: str = "embedded"):
    if chat_only:
        return None
    from cybersecqwen.serve.catalog import load_catalogs
    from cybersecqwen.serve.fuse import model_identity
    from cybersecqwen.serve.service import CtiService

    loaded_heads = None
    if heads is not None:
        from cybersecqwen.heads import load_heads

        loaded_heads = load_heads(heads)
    try:
        catalogs = load_catalogs(data_dir, download)
    except CybersecqwenError as exc:
        raise CybersecqwenError(f"the structured endpoints need the CWE and ATT&CK catalogs: {exc} (or pass --chat-only)") from None
    if loaded_heads is not None:
        unknown = sorted(set(loaded_heads.models["cwe"].labels) - set(catalogs.cwe))
        if unknown:
            raise CybersecqwenError(f"the heads in {heads} answer CWE ids outside this catalog ({', '.join(unknown[:5])}); "
                                    "retrain them against the same CWE version")
    return CtiService(backend, catalogs, loaded_heads, model_label=model_identity(model))


def serving_backend(model: str, backend_kind: str, no_model: bool = False):
    from cybersecqwen.models import load_backend

    if no_model:
        return None
    if model == "embedded" and backend_kind == "auto":
        backend_kind = "llamacpp"  # the shipped GGUF: single-stream speed is what a server needs (NOTES.md)
    return load_backend(model, backend_kind, batch_size=1)


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
MAX_CONNECTIONS = 64  # open connections and running requests; more get 503 from uvicorn
KEEP_ALIVE_S = 5
MAX_HEADER_BYTES = 16_384


def bounded_protocol(read_timeout: float):
    """uvicorn's h11 protocol with a deadline on reading each request: uvicorn bounds idle keep-alive connections
    but not a client that dribbles its headers or body (slowloris); this one closes such a connection."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class BoundedH11Protocol(H11Protocol):
        _read_timer = None

        def _arm(self) -> None:
            self._read_timer = self.loop.call_later(read_timeout, self._read_timed_out)

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._read_timer is None and self.conn.their_state is h11.IDLE:  # the next request on a kept-alive connection
                self._arm()
            super().data_received(data)
            if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):  # the request is in (or the connection is ending)
                self._disarm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _read_timed_out(self) -> None:
            self._read_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return BoundedH11Protocol


def uvicorn_config(app, host: str, port: int, read_timeout: float = READ_TIMEOUT_S):
    """The server's uvicorn settings (used by `serve` and by the tests' live server): bounded request reads,
    connections, keep-alive and header size."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, http=bounded_protocol(read_timeout),
                          limit_concurrency=MAX_CONNECTIONS, timeout_keep_alive=KEEP_ALIVE_S,
                          h11_max_incomplete_event_size=MAX_HEADER_BYTES)


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
