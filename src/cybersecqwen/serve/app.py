"""`cybersecqwen serve`: the local CTI API (FastAPI).

- OpenAI-compatible `/v1/chat/completions` (plain and SSE streaming; json_schema / json_object through a
  llama.cpp grammar) and `/v1/models`;
- structured endpoints `/v1/cwe/classify`, `/v1/cve/map`, `/v1/attack/extract`, `/v1/cti/ask` (see service.py);
- `/healthz`, `/readyz`, Prometheus `/metrics`, and the analyst page at `/`.

Safety: API key (constant-time compare) on everything but health and the static page; request body limit
(413) checked before parsing; token limit (422); a bounded queue (429 + Retry-After); a per-request timeout
(504); an audit log of sizes and latency, never the content unless asked. The app makes no outbound
connection of its own (the `openai:` backend talks only to the upstream the operator named).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cybersecqwen import __version__
from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.models.base import GenerationRequest
from cybersecqwen.serve import schemas
from cybersecqwen.serve.service import CtiService

PUBLIC_PATHS = {"/", "/healthz", "/readyz", "/favicon.ico"}


@dataclass
class ServerSettings:
    model_name: str = "cybersecqwen"
    api_key: str | None = None
    max_body_bytes: int = 1_000_000
    max_tokens: int = 1024  # the most tokens one request may ask for
    max_queue: int = 8  # requests waiting or running; more get 429
    timeout_s: float = 120.0
    audit_log: Path | None = None
    log_content: bool = False


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", headers: dict[str, str] | None = None):
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}


def error_body(message: str, kind: str, code: int) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": code}}


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("cybersecqwen_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("cybersecqwen_request_seconds", "Request latency", ["endpoint"], registry=self.registry,
                                 buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.queue = Gauge("cybersecqwen_queue_depth", "Requests waiting or running on the model", registry=self.registry)
        self.tokens = Counter("cybersecqwen_generated_tokens", "Tokens generated", registry=self.registry)
        self.tokens_per_s = Gauge("cybersecqwen_tokens_per_second", "Generation speed of the last completion", registry=self.registry)


def create_app(backend, service: CtiService | None, settings: ServerSettings) -> FastAPI:
    app = FastAPI(title="cybersecqwen", version=__version__,
                  description="Local CTI model API. Outputs need human review; not for exploit generation or unattended decisions.")
    metrics = Metrics()
    state = {"in_flight": 0}
    # One model, one caller at a time (llama.cpp contexts and HF models are not thread-safe): chat shares the lock
    # the structured endpoints take inside the service.
    model_lock = service.lock if service is not None else threading.Lock()

    app.state.model_lock = model_lock  # whoever closes the backend takes it first: never free a model mid-request

    def locked(function: Callable[[], Any]) -> Callable[[], Any]:
        def run():
            with model_lock:
                return function()
        return run
    audit_lock = asyncio.Lock()

    async def audit(record: dict[str, Any]) -> None:
        if settings.audit_log is None:
            return
        line = json.dumps(record, ensure_ascii=True) + "\n"
        async with audit_lock:
            with settings.audit_log.open("a", encoding="utf-8") as handle:
                handle.write(line)

    def too_large() -> JSONResponse:
        return JSONResponse(error_body(f"request body over {settings.max_body_bytes} bytes", "request_too_large", 413), 413)

    def admit() -> None:
        """429 when the queue is full; checked when a request arrives, before any of its work starts."""
        if state["in_flight"] >= settings.max_queue:
            raise ApiError(429, f"server busy: {settings.max_queue} requests queued; retry shortly", "rate_limit_error",
                           {"Retry-After": "1"})

    @contextlib.contextmanager
    def occupied():
        """One queue slot, held while the request waits for or runs on the model."""
        state["in_flight"] += 1
        metrics.queue.set(state["in_flight"])
        try:
            yield
        finally:
            state["in_flight"] -= 1
            metrics.queue.set(state["in_flight"])

    @app.middleware("http")
    async def guard(request: Request, call_next):
        started = time.perf_counter()
        request_id = request.headers.get("x-request-id", "")[:64] or uuid.uuid4().hex
        request.state.request_id = request_id
        path = request.url.path
        body = b""
        try:
            length = int(request.headers.get("content-length") or 0)
        except ValueError:
            length = settings.max_body_bytes + 1
        if length > settings.max_body_bytes:
            response = too_large()
        elif settings.api_key and path not in PUBLIC_PATHS and not authorized(request, settings.api_key):
            response = JSONResponse(error_body("missing or wrong API key (Authorization: Bearer KEY)", "authentication_error", 401),
                                    401, headers={"WWW-Authenticate": "Bearer"})
        else:
            body = await request.body()
            if len(body) > settings.max_body_bytes:  # chunked bodies carry no content-length
                response = too_large()
            else:
                response = await call_next(request)
        response.headers["x-request-id"] = request_id
        seconds = time.perf_counter() - started
        endpoint = path if path in KNOWN_PATHS else "other"
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(seconds)
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "request_id": request_id, "method": request.method,
                  "endpoint": path[:200], "status": response.status_code, "request_bytes": len(body) or length,
                  "latency_ms": round(seconds * 1000, 1), "client": request.client.host if request.client else None}
        if settings.log_content:
            record["content"] = body.decode("utf-8", "replace")[:20_000]
        await audit(record)
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse(error_body(exc.message, exc.kind, exc.status), exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        return JSONResponse(error_body(f"invalid request: {problems}", "invalid_request_error", 422), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error", exc.status_code), exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):  # never leak a traceback to the client
        return JSONResponse(error_body("internal error; see the server log", "server_error", 500), 500)

    async def on_model(function: Callable[[], Any]) -> Any:
        """Run one model job: bounded queue (429), timeout (504), user errors (400)."""
        admit()
        with occupied():
            try:
                return await asyncio.wait_for(run_in_threadpool(function), timeout=settings.timeout_s)
            except asyncio.TimeoutError:
                raise ApiError(504, f"the model did not answer within {settings.timeout_s:.0f} s", "timeout") from None
            except CybersecqwenError as exc:
                raise ApiError(400, str(exc)) from None

    def need_service() -> CtiService:
        if service is None:
            raise ApiError(503, "structured endpoints need the CWE and ATT&CK catalogs; start the server with the data mirror "
                                "(--data-dir or CYBERSECQWEN_DATA_DIR)", "unavailable")
        return service

    def token_limit(requested: int | None) -> int:
        if requested is not None and requested > settings.max_tokens:
            raise ApiError(422, f"max_tokens {requested} is over this server's limit of {settings.max_tokens}")
        return requested or min(512, settings.max_tokens)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        return {"status": "ready", "model": settings.model_name, "catalogs": service is not None}

    @app.get("/metrics")
    async def prometheus():
        from prometheus_client import generate_latest

        return PlainTextResponse(generate_latest(metrics.registry).decode(), media_type="text/plain; version=0.0.4")

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(resources.files("cybersecqwen.serve").joinpath("static/index.html").read_text(encoding="utf-8"),
                            headers={"Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                                                                "style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:"})

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "created": 0, "owned_by": "local"}]}

    @app.post("/v1/chat/completions")
    async def chat(body: schemas.ChatRequest):
        max_tokens = token_limit(body.max_tokens)
        stop = tuple([body.stop] if isinstance(body.stop, str) else body.stop or [])
        schema = None
        if body.response_format and body.response_format.type == "json_schema":
            if body.response_format.json_schema is None:
                raise ApiError(422, "response_format json_schema needs a json_schema object with a schema")
            schema = json.dumps(body.response_format.json_schema.schema_)
        elif body.response_format and body.response_format.type == "json_object":
            schema = "{}"
        # The deadline stops llama.cpp mid-generation when the request times out, freeing the model for the queue.
        request = GenerationRequest([m.model_dump() for m in body.messages], max_tokens, body.temperature, stop,
                                    body.seed if body.seed is not None else 42, json_schema=schema,
                                    deadline=time.monotonic() + settings.timeout_s)
        created, completion_id = int(time.time()), f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if body.stream:
            return await stream_chat(request, completion_id, created)
        started = time.perf_counter()
        text = await on_model(locked(lambda: backend.generate([request])[0]))
        seconds = time.perf_counter() - started
        prompt_tokens, completion_tokens = count(backend, request.messages), count_text(backend, text)
        metrics.tokens.inc(completion_tokens)
        metrics.tokens_per_s.set(completion_tokens / max(seconds, 1e-9))
        return {"id": completion_id, "object": "chat.completion", "created": created, "model": settings.model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "length" if completion_tokens >= max_tokens else "stop"}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}

    async def stream_chat(request: GenerationRequest, completion_id: str, created: int):
        admit()
        pieces: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def produce() -> None:
            try:
                with model_lock:
                    for piece in stream_pieces(backend, request):
                        loop.call_soon_threadsafe(pieces.put_nowait, piece)
            except Exception as exc:  # noqa: BLE001 - reported to the client as an error event
                loop.call_soon_threadsafe(pieces.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(pieces.put_nowait, None)

        def chunk(delta: dict, finish: str | None = None) -> str:
            payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": settings.model_name,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(payload)}\n\n"

        async def events():
            # The slot is taken inside the generator: a client gone before the body starts never holds one.
            with occupied():
                task = asyncio.ensure_future(run_in_threadpool(produce))
                try:
                    yield chunk({"role": "assistant", "content": ""})
                    produced = 0
                    while True:
                        piece = await asyncio.wait_for(pieces.get(), timeout=settings.timeout_s)
                        if piece is None:
                            break
                        if isinstance(piece, Exception):
                            yield f"data: {json.dumps(error_body('generation failed', 'server_error', 500))}\n\n"
                            break
                        produced += 1
                        yield chunk({"content": piece})
                    metrics.tokens.inc(produced)
                    yield chunk({}, "stop")
                    yield "data: [DONE]\n\n"
                finally:
                    await task

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/v1/cwe/classify", response_model=schemas.ClassifyResponse)
    async def classify(body: schemas.ClassifyRequest):
        svc = need_service()
        return await on_model(lambda: svc.classify_cwe(body.text, body.top_k))

    @app.post("/v1/cve/map", response_model=schemas.CveMapResponse)
    async def cve_map(body: schemas.CveMapRequest):
        svc = need_service()
        return await on_model(lambda: svc.map_cve(body.cve_id, body.description, body.top_k))

    @app.post("/v1/attack/extract", response_model=schemas.AttackResponse)
    async def attack(body: schemas.AttackRequest):
        svc = need_service()
        return await on_model(lambda: svc.extract_attack(body.text, body.max_techniques))

    @app.post("/v1/cti/ask", response_model=schemas.AskResponse)
    async def ask(body: schemas.AskRequest):
        svc = need_service()
        max_tokens = token_limit(body.max_tokens)
        return await on_model(lambda: svc.ask(body.question, body.options, max_tokens))

    return app


KNOWN_PATHS = {"/", "/healthz", "/readyz", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/cwe/classify",
               "/v1/cve/map", "/v1/attack/extract", "/v1/cti/ask"}


def authorized(request: Request, key: str) -> bool:
    header = request.headers.get("authorization", "")
    given = header[7:] if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
    return hmac.compare_digest(given.encode("utf-8", "replace"), key.encode("utf-8"))


def stream_pieces(backend, request: GenerationRequest):
    stream = getattr(backend, "stream", None)
    if stream is None:  # backends without token streaming send the whole reply as one piece
        yield backend.generate([request])[0]
        return
    yield from stream(request)


def count_text(backend, text: str) -> int:
    counter = getattr(backend, "count_tokens", None)
    return counter(text) if counter else len(text.split())


def count(backend, messages: list[dict[str, str]]) -> int:
    return count_text(backend, "\n".join(m["content"] for m in messages))
