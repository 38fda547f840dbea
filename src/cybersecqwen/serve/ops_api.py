"""Operations routes: health and readiness probes, Prometheus metrics, and the analyst page."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, PlainTextResponse

PAGE_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; connect-src 'self'; "
            "img-src 'self' data:")


def ops_router(settings, metrics, has_catalogs: bool) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz():
        return {"status": "ready", "model": settings.model_name, "catalogs": has_catalogs}

    @router.get("/metrics")
    async def prometheus():
        from prometheus_client import generate_latest

        return PlainTextResponse(generate_latest(metrics.registry).decode(), media_type="text/plain; version=0.0.4")

    @router.get("/", response_class=HTMLResponse)
    async def page():
        html = resources.files("cybersecqwen.serve").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_CSP})

    return router
