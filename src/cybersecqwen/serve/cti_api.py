"""The structured CTI routes: CWE classification, CVE mapping, ATT&CK extraction, CTI Q&A (see service.py)."""

from __future__ import annotations

from fastapi import APIRouter

from cybersecqwen.serve import schemas
from cybersecqwen.serve.gate import ApiError, ModelGate
from cybersecqwen.serve.openai_api import token_limit
from cybersecqwen.serve.service import CtiService


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

    @router.post("/v1/cti/ask", response_model=schemas.AskResponse)
    async def ask(body: schemas.AskRequest):
        svc = need_service()
        max_tokens = token_limit(body.max_tokens, settings.max_tokens)
        return await gate.run(lambda: svc.ask(body.question, body.options, max_tokens))

    return router
