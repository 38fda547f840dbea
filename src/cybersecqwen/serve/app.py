"""`cybersecqwen serve`: the local CTI API (FastAPI).

- OpenAI-compatible `/v1/chat/completions` (plain and SSE streaming; json_schema / json_object through a
  llama.cpp grammar) and `/v1/models`;
- structured endpoints `/v1/cwe/classify`, `/v1/cve/map`, `/v1/attack/extract`, `/v1/cti/ask` (see service.py);
- `/healthz`, `/readyz`, Prometheus `/metrics`, and the analyst page at `/`.

Safety (docs/security.md has the threat model and every limit): API key (constant-time compare) on everything but
health and the static page; the Host header checked against the names the server answers to (DNS rebinding);
request body limit (413) enforced while reading, chunked or not, so no body is ever read past it; token limits;
a bounded queue (429 + Retry-After) that streams count against too; a per-request timeout (504) that also stops
the work; every response, errors and 500s included, audited, counted and tagged with `x-request-id`; the audit log
holds sizes and latency, never the content unless asked. The app makes no outbound connection of its own (the
`openai:` backend talks only to the upstream the operator named).

Layout: this module builds the app (settings, the guard middleware, error handlers); routes.py holds the
OpenAI, CTI and operations routers; gate.py owns the model lock, the queue and the timeout.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from cybersecqwen import __version__
from cybersecqwen.answering.service import CtiService
from cybersecqwen.models.base import Backend
from cybersecqwen.serve.gate import ApiError, ModelGate, error_body
from cybersecqwen.serve.routes import cti_router, openai_router, ops_router

log = logging.getLogger(__name__)
PUBLIC_PATHS = {"/", "/page.js", "/page.css", "/healthz", "/readyz", "/favicon.ico"}
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
MAX_HEADER_BYTES = 16_384  # the request's header block; h11 enforces it only on headers that arrive in pieces
HEALTH_PATHS = {"/healthz", "/readyz"}  # answered even when the server is at its in-flight limit
CLIENT_ID = re.compile(r"[^A-Za-z0-9._:@/+=-]")
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                    "Cache-Control": "no-store"}


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
    # Host header names answered (ports ignored); "*" answers any. `serve` adds the bound address.
    allowed_hosts: tuple[str, ...] = LOOPBACK_NAMES
    # Proxies whose X-Forwarded-For names the client (addresses or networks); none by default: the socket's address.
    trusted_proxies: tuple[str, ...] = ()
    max_in_flight: int = 64  # requests being handled at once (health checks aside); more get 503


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
        self.connections = Counter("cybersecqwen_connection_refusals", "Connections the server refused or closed before a "
                                   "request reached the app (status 'none': closed without an answer)", ["status", "reason"],
                                   registry=self.registry)


def create_app(backend: Backend, service: CtiService | None, settings: ServerSettings) -> FastAPI:
    # No /docs or /redoc: their pages pull scripts from a CDN (nothing leaves this machine); /openapi.json is served.
    app = FastAPI(title="cybersecqwen", version=__version__, docs_url=None, redoc_url=None,
                  description="Local CTI model API. Outputs need human review; not for exploit generation or unattended decisions.")
    metrics = Metrics()
    gate = ModelGate(settings.max_queue, settings.timeout_s, metrics.queue.set)
    app.state.settings = settings  # uvicorn_config reads the trusted proxies from here
    app.state.model_lock = gate.lock  # whoever closes the backend takes it first: never free a model mid-request
    routers = [ops_router(settings, metrics, service is not None, backend is not None), openai_router(backend, gate, settings, metrics),
               cti_router(service, gate, settings)]
    known_paths = {route.path for router in routers for route in router.routes}  # the metrics' endpoint labels
    for router in routers:
        app.include_router(router)
    audit_lock = asyncio.Lock()

    async def audit(record: dict) -> None:
        if settings.audit_log is None:
            return
        line = json.dumps(record, ensure_ascii=True) + "\n"
        async with audit_lock:
            with settings.audit_log.open("a", encoding="utf-8") as handle:
                handle.write(line)

    def too_large() -> JSONResponse:
        return JSONResponse(error_body(f"request body over {settings.max_body_bytes} bytes", "request_too_large", 413), 413,
                            headers={"Connection": "close"})

    async def read_body(request: Request) -> bytes | None:
        """The body, read no further than the limit (None: over it). A chunked upload carries no length: it is
        counted as it arrives and never held whole."""
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_body_bytes:
                return None
            chunks.append(chunk)
        body = b"".join(chunks)
        request._body = body  # what the route reads (Starlette replays a cached body downstream)
        return body

    def host_allowed(request: Request) -> bool:
        if "*" in settings.allowed_hosts:
            return True
        host = request.headers.get("host", "")
        name = host[1:].split("]")[0] if host.startswith("[") else host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return name.lower() in {h.lower().strip("[]") for h in settings.allowed_hosts}

    def refusal(status: int | None, reason: str, client: str | None) -> None:
        """A connection refused or closed by the protocol (server.py), before any request reached the app: counted,
        and, when it was answered with a status, audited."""
        kind = reason.split(":")[0]
        metrics.connections.labels(str(status).lower(), kind).inc()
        if status is not None:
            metrics.requests.labels("connection", str(status)).inc()
            asyncio.ensure_future(audit({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "request_id": uuid.uuid4().hex,
                                         "event": "connection_refused", "status": status, "reason": reason[:200],
                                         "client": client}))

    app.state.refusal = refusal
    in_flight = [0]

    def refuse_framing(request: Request) -> JSONResponse | None:
        """Header blocks over the limit (431) and a body framed two ways (400, then the connection closes: a proxy
        in front may have read the body by the other framing, RFC 9112 6.3)."""
        size = sum(len(name) + len(value) + 4 for name, value in request.headers.raw)
        if size > MAX_HEADER_BYTES:
            return JSONResponse(error_body(f"request headers are {size:,} bytes; the limit is {MAX_HEADER_BYTES:,}",
                                           "request_too_large", 431), 431, headers={"Connection": "close"})
        if "transfer-encoding" in request.headers and "content-length" in request.headers:
            return JSONResponse(error_body("a request may carry Transfer-Encoding or Content-Length, not both",
                                           "invalid_request_error", 400), 400, headers={"Connection": "close"})
        return None

    @app.middleware("http")
    async def guard(request: Request, call_next):
        started = time.perf_counter()
        # The server names every request; a client's own id is kept beside it, never in its place (no forged repeats).
        request_id = uuid.uuid4().hex
        client_id = CLIENT_ID.sub("", request.headers.get("x-request-id", ""))[:64] or None
        request.state.request_id = request_id
        path = request.url.path
        body = b""
        try:
            length = int(request.headers.get("content-length") or 0)
        except ValueError:
            length = settings.max_body_bytes + 1
        counted = path not in HEALTH_PATHS
        in_flight[0] += counted
        try:
            framing = refuse_framing(request)
            if framing is not None:
                response = framing
            elif not host_allowed(request):
                response = JSONResponse(error_body(f"Host {request.headers.get('host', '')[:100]!r} is not a name this server "
                                                   "answers to (start it with --allow-host NAME)", "invalid_request_error", 400), 400)
            elif counted and in_flight[0] > settings.max_in_flight:
                response = JSONResponse(error_body(f"server busy: {settings.max_in_flight} requests in flight; retry shortly",
                                                   "unavailable", 503), 503, headers={"Retry-After": "1"})
            elif length > settings.max_body_bytes:
                response = too_large()
            elif settings.api_key and path not in PUBLIC_PATHS and not authorized(request, settings.api_key):
                response = JSONResponse(error_body("missing or wrong API key (Authorization: Bearer KEY)", "authentication_error", 401),
                                        401, headers={"WWW-Authenticate": "Bearer"})
            else:
                read = await read_body(request)
                if read is None:
                    response = too_large()
                else:
                    body = read
                    response = await call_next(request)
        except ClientDisconnect:
            response = JSONResponse(error_body("the client went away before its request arrived", "invalid_request_error", 400), 400)
        except Exception:  # noqa: BLE001 - logged with its traceback; the client gets a 500 that is audited like any answer
            log.exception("request %s to %s failed", request_id, path)
            response = JSONResponse(error_body("internal error; see the server log", "server_error", 500), 500)
        finally:
            in_flight[0] -= counted
        response.headers["x-request-id"] = request_id
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        seconds = time.perf_counter() - started
        endpoint = path if path in known_paths else "other"
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(seconds)
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "request_id": request_id, "method": request.method,
                  "endpoint": path[:200], "status": response.status_code, "request_bytes": len(body) or length,
                  "latency_ms": round(seconds * 1000, 1), "client": request.client.host if request.client else None}
        if client_id:
            record["client_request_id"] = client_id
        if settings.log_content:
            record["content"] = body.decode("utf-8", "replace")[:20_000]
        await audit(record)
        return response

    app.state.audit = audit  # streamed responses report a failure after their status line was sent

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse(error_body(exc.message, exc.kind, exc.status), exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        # Each message cut to 200 characters: a 4,000-digit number or a long string is never echoed whole.
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])[:80]}: {str(e['msg'])[:200]}" for e in exc.errors()[:5])
        return JSONResponse(error_body(f"invalid request: {problems}", "invalid_request_error", 422), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        # Its headers too: a 405 names the methods the path takes (Allow), as RFC 9110 asks.
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error", exc.status_code), exc.status_code,
                            headers=exc.headers)

    return app


def authorized(request: Request, key: str) -> bool:
    header = request.headers.get("authorization", "")
    given = header[7:] if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
    return hmac.compare_digest(given.encode("utf-8", "replace"), key.encode("utf-8"))
