"""The API's routes, as three routers: OpenAI-compatible chat, the structured CTI endpoints, and operations.

Everything that touches the model goes through the ModelGate (gate.py): one lock, the queue limit, the deadline.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
import uuid
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse

from cybersecqwen.answering.service import CtiService
from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.models.base import Backend, GenerationRequest
from cybersecqwen.serve import schemas
from cybersecqwen.serve.gate import ApiError, ModelGate, error_body
from cybersecqwen.serve.json_schema import SchemaTooComplex, check_json_schema

# The page's script and style are files of their own: no inline code runs, no other site may frame the page.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
STATIC = {"/page.js": ("page.js", "text/javascript; charset=utf-8"), "/page.css": ("page.css", "text/css; charset=utf-8")}


def ops_router(settings, metrics, has_catalogs: bool, has_model: bool = True) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz():
        # Under --no-model no language model is loaded: say so rather than name one.
        return {"status": "ready", "model": settings.model_name if has_model else None, "catalogs": has_catalogs,
                "mode": "model" if has_model else "heads only"}

    @router.get("/metrics")
    async def prometheus():
        from prometheus_client import generate_latest

        return PlainTextResponse(generate_latest(metrics.registry).decode(), media_type="text/plain; version=0.0.4")

    @router.get("/", response_class=HTMLResponse)
    async def page():
        html = resources.files("cybersecqwen.serve").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_CSP})

    def static_asset(name: str, media_type: str):
        text = resources.files("cybersecqwen.serve").joinpath(f"static/{name}").read_text(encoding="utf-8")

        async def asset():  # no parameters: nothing a client sends reaches the file
            return Response(text, media_type=media_type)
        return asset

    for path, (name, media_type) in STATIC.items():
        router.add_api_route(path, static_asset(name, media_type), methods=["GET", "HEAD"], include_in_schema=False)
    for path, endpoint in (("/", page), ("/healthz", healthz), ("/readyz", readyz)):  # HEAD as well as GET (monitors use it)
        router.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)

    return router


class SlotResponse(StreamingResponse):
    """A stream that stops its generation and gives its queue slot back however it ends: finished, failed, or dropped
    by its client (then the next token's send fails, and the producer sees `stop` before the token after). Also when
    the client leaves before the body starts (the generator's own cleanup never runs then)."""

    def __init__(self, content, release, stop: threading.Event, **kwargs) -> None:
        super().__init__(content, **kwargs)
        self.release, self.stop = release, stop

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.stop.set()  # a dropped client: generation ends at its next token, not at max_tokens
            try:
                await self.body_iterator.aclose()  # now, not whenever the event loop finalises the generator
            finally:
                self.release()


def token_limit(requested: int | None, limit: int) -> int:
    if requested is not None and requested > limit:
        shown = str(requested) if requested < 10**12 else f"of {len(str(requested)):,} digits"  # never echo a huge number whole
        raise ApiError(422, f"max_tokens {shown} is over this server's limit of {limit}")
    return requested or min(512, limit)


def openai_router(backend: Backend, gate: ModelGate, settings, metrics) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "created": 0, "owned_by": "local"}]}

    @router.post("/v1/chat/completions")
    async def chat(body: schemas.ChatRequest, http: Request):
        if backend is None:
            raise ApiError(503, "this server runs the specialist heads only (--no-model): no language model to chat with",
                           "unavailable")
        if body.n not in (None, 1):
            raise ApiError(400, f"n={body.n}: this server returns one choice per request; send n=1 or leave n out")
        limits = [n for n in (body.max_tokens, body.max_completion_tokens) if n is not None]
        max_tokens = token_limit(min(limits) if limits else None, settings.max_tokens)
        stop = tuple([body.stop] if isinstance(body.stop, str) else body.stop or [])
        if any(s == "" for s in stop):  # an empty stop string matches before the first token: the reply would be empty
            raise ApiError(400, "stop: an empty string stops before anything is written; send non-empty stop strings or leave stop out")
        if body.logprobs or body.top_logprobs is not None:
            raise ApiError(400, "logprobs/top_logprobs are not returned by /v1/chat/completions here; the structured "
                                "endpoints (/v1/cwe/classify, /v1/cti/ask, ...) return each candidate's probability")
        schema = None
        if body.response_format and body.response_format.type == "json_schema":
            if body.response_format.json_schema is None:
                raise ApiError(422, "response_format json_schema needs a json_schema object with a schema")
            try:  # bounded before llama.cpp sees it: an unbounded schema can crash or stall the grammar (json_schema.py)
                check_json_schema(body.response_format.json_schema.schema_)
            except SchemaTooComplex as exc:
                raise ApiError(400, f"response_format: {exc}") from None
            schema = json.dumps(body.response_format.json_schema.schema_)
        elif body.response_format and body.response_format.type == "json_object":
            schema = "{}"
        if schema is not None:
            try:  # the grammar, parsed by llama.cpp now: a schema it refuses is a 400 here, never a failed stream after a 200
                await run_in_threadpool(backend.check_json_schema, schema)
            except CybersecqwenError as exc:
                raise ApiError(400, f"response_format: {exc}") from None
        # The deadline stops llama.cpp mid-generation when the request times out, freeing the model for the queue.
        request = GenerationRequest([m.model_dump() for m in body.messages], max_tokens, body.temperature, stop,
                                    # Without a seed every sample is fresh (independent trials); with one it is reproducible.
                                    body.seed if body.seed is not None else secrets.randbelow(2**31), json_schema=schema,
                                    deadline=time.monotonic() + settings.timeout_s)
        # Counted before any queueing: a prompt the model cannot hold is the caller's error, named in tokens.
        prompt_tokens = backend.prompt_length(request.messages)
        context = backend.context_length
        if prompt_tokens is not None and context and prompt_tokens + max_tokens > context:
            raise ApiError(413, f"the messages are {prompt_tokens} tokens; with max_tokens {max_tokens} that is over the model's "
                                f"context of {context} tokens: shorten the messages or lower max_tokens", "context_length_exceeded")
        created, completion_id = int(time.time()), f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if body.stream:
            return stream_chat(request, completion_id, created, http.state.request_id, http.app.state.audit)
        started = time.perf_counter()
        text = await gate.run(lambda: backend.generate([request])[0])
        seconds = time.perf_counter() - started
        if prompt_tokens is None:
            prompt_tokens = backend.count_tokens("\n".join(m["content"] for m in request.messages))
        completion_tokens = backend.count_tokens(text)
        metrics.tokens.inc(completion_tokens)
        metrics.tokens_per_s.set(completion_tokens / max(seconds, 1e-9))
        return {"id": completion_id, "object": "chat.completion", "created": created, "model": settings.model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "length" if completion_tokens >= max_tokens else "stop"}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}

    def stream_chat(request: GenerationRequest, completion_id: str, created: int, request_id: str, audit) -> StreamingResponse:
        release = gate.take_slot()  # before the 200 goes out: streams count against the queue too
        pieces: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        halt = threading.Event()

        def produce() -> None:
            try:
                with gate.lock:
                    if halt.is_set():
                        return  # dropped while it waited for the model
                    for piece in backend.stream(request):
                        if halt.is_set():
                            break  # closing the generator stops llama.cpp before its next token
                        loop.call_soon_threadsafe(pieces.put_nowait, piece)
            except Exception as exc:  # noqa: BLE001 - reported to the client as an error event
                loop.call_soon_threadsafe(pieces.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(pieces.put_nowait, None)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": settings.model_name,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(payload)}\n\n"

        async def events():
            task = asyncio.ensure_future(run_in_threadpool(produce))
            failure = None
            try:
                yield chunk({"role": "assistant", "content": ""})
                produced = 0
                while True:
                    try:
                        piece = await asyncio.wait_for(pieces.get(), timeout=settings.timeout_s)
                    except asyncio.TimeoutError:
                        piece = TimeoutError(f"no token within {settings.timeout_s:.0f} s")
                    if piece is None:
                        break
                    if isinstance(piece, Exception):
                        failure = piece
                        break
                    produced += 1
                    yield chunk({"content": piece})
                metrics.tokens.inc(produced)
                if failure is not None:
                    # The 200 status line is long gone: the stream itself says it failed, and so does the audit log.
                    yield f"data: {json.dumps(error_body('generation failed', 'server_error', 500))}\n\n"
                    yield chunk({}, "error")
                    await audit({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "request_id": request_id,
                                 "endpoint": "/v1/chat/completions", "event": "stream_failed", "status": 500,
                                 "error": type(failure).__name__})
                    metrics.requests.labels("/v1/chat/completions", "stream_failed").inc()
                else:
                    yield chunk({}, "stop")
                yield "data: [DONE]\n\n"
            finally:
                halt.set()
                try:
                    await task
                finally:
                    release()

        return SlotResponse(events(), release, halt, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return router


def cti_router(service: CtiService | None, gate: ModelGate, settings) -> APIRouter:
    router = APIRouter()

    def need_service() -> CtiService:
        if service is None:
            raise ApiError(503, "structured endpoints need the CWE and ATT&CK catalogs; start the server with the data mirror "
                                "(--data-dir or CYBERSECQWEN_DATA_DIR)", "unavailable")
        return service

    @router.post("/v1/cwe/classify", response_model=schemas.ClassifyResponse)
    async def classify(body: schemas.ClassifyRequest):
        svc = need_service()
        return await gate.run(lambda: svc.classify_cwe(body.text, body.top_k))

    @router.post("/v1/cve/map", response_model=schemas.CveMapResponse)
    async def cve_map(body: schemas.CveMapRequest):
        svc = need_service()
        return await gate.run(lambda: svc.map_cve(body.cve_id, body.description, body.top_k))

    @router.post("/v1/attack/extract", response_model=schemas.AttackResponse)
    async def attack(body: schemas.AttackRequest):
        svc = need_service()
        return await gate.run(lambda: svc.extract_attack(body.text, body.max_techniques))

    @router.post("/v1/advisory/analyze")
    async def advisory(body: schemas.AdvisoryRequest):
        """CVEs, weaknesses (with CAPEC), CVSS, ATT&CK techniques, threat actors, indicators and a summary, each with
        its evidence (character offsets into the returned `text`) and a confidence."""
        from cybersecqwen.answering.advisory import analyze, to_stix

        svc = need_service()

        def job() -> dict[str, Any]:
            result = analyze(svc, body.text, body.format)
            if body.stix:
                result["stix"] = json.loads(to_stix(result))
            if body.misp:
                from cybersecqwen.answering.misp import to_misp

                result["misp"] = to_misp(result)
            return result
        return await gate.run(job)

    @router.post("/v1/cti/ask", response_model=schemas.AskResponse)
    async def ask(body: schemas.AskRequest):
        svc = need_service()
        max_tokens = token_limit(body.max_tokens, settings.max_tokens)
        return await gate.run(lambda: svc.ask(body.question, body.options, max_tokens))

    return router
