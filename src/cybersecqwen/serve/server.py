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


def serve(model: str, backend_kind: str, host: str, port: int, settings: ServerSettings, data_dir: Path | None = None,
          download: bool = False, chat_only: bool = False, heads: Path | None = None, no_model: bool = False) -> None:
    import uvicorn

    check_binding(host, settings.api_key)
    with socket.socket() as probe:  # a clear error before loading a model, not a traceback after
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CybersecqwenError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    app, backend = build_app(model, backend_kind, settings, data_dir, download, chat_only, heads, no_model)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        with app.state.model_lock:  # a timed-out request may still be finishing on the model
            if backend is not None:
                backend.close()
