"""Request and response bodies of the API (pydantic; they are the OpenAPI docs at /docs)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_TEXT = 20_000  # characters of one text field; the body limit is enforced before parsing


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=MAX_TEXT * 2)


class JsonSchemaFormat(BaseModel):
    name: str = "response"
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None
    model_config = ConfigDict(populate_by_name=True)


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class ChatRequest(BaseModel):
    """Strict types: "1" is not a number and "yes" not a boolean (no silent coercion)."""

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1, max_length=64)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_tokens: int | None = Field(None, ge=1)
    # OpenAI's current name for the same limit (newer clients and Cisco's FAITH send it); the smaller wins.
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    stream: bool = False
    seed: int | None = None
    n: int | None = Field(None, description="Only one choice per request is supported: n other than 1 is a 400")
    response_format: ResponseFormat | None = None
    # Refused when asked for (400), never silently dropped: a client must know it gets no log-probabilities.
    logprobs: bool | None = None
    top_logprobs: int | None = None
    # OpenAI clients send fields we do not use (top_p, user, ...): ignored; the ones above are checked strictly.
    model_config = ConfigDict(extra="ignore", strict=True)


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(strict=True)
    text: str = Field(min_length=1, max_length=MAX_TEXT, description="Vulnerability or weakness description")
    top_k: int = Field(3, ge=1, le=10)


class Components(BaseModel):
    """Each answerer's own probability of this candidate (None where that answerer is not in use)."""

    head: float | None = None
    model: float | None = None
    lexical: float | None = None
    knowledge: float | None = Field(None, description="ATT&CK: the closest match between the text's sentences and the "
                                    "technique's own descriptions and procedure examples in the catalog (cosine)")
    sentences: float | None = Field(None, description="ATT&CK: the sentence classifier's probability of this technique in the "
                                    "text's likeliest sentence")


class Quality(BaseModel):
    metric: str
    value: float
    items: int | None = None
    on: str = Field(description="what was measured: which answerer, on which items")


class Answerer(BaseModel):
    """Who answered a job, and what that answerer measured on validation items (null: not measured)."""

    kind: str = Field(description="heads and model, fused | heads | model alone | lexical")
    uses: list[str] = Field(description="the features with weight: head, model, lexical, knowledge")
    quality: Quality | None = None
    note: str | None = None


class CweCandidate(BaseModel):
    cwe_id: str
    name: str
    url: str
    confidence: float
    components: Components | None = None
    justification: str


class ClassifyResponse(BaseModel):
    candidates: list[CweCandidate]
    needs_review: bool
    method: str
    note: str | None = Field(None, description="Set when the language model read only the start of a long text")
    answerer: dict[str, Answerer] | None = Field(None, description="per job: who answered and its measured quality")


class CveMapRequest(BaseModel):
    model_config = ConfigDict(strict=True)
    # ASCII digits only: \d would also take fullwidth and other Unicode digits.
    cve_id: str = Field(pattern=r"^CVE-[0-9]{4}-[0-9]{4,19}$", max_length=32, description="e.g. CVE-2024-3094")
    description: str = Field(min_length=1, max_length=MAX_TEXT)
    top_k: int = Field(3, ge=1, le=10)


class Cvss(BaseModel):
    vector: str
    base_score: float | None
    confidence: float
    metric_confidence: dict[str, float]


class CveMapResponse(BaseModel):
    cve_id: str
    cwe: list[CweCandidate]
    cvss: Cvss
    needs_review: bool
    method: str
    note: str | None = Field(None, description="Set when the language model read only the start of a long text")
    answerer: dict[str, Answerer] | None = Field(None, description="per job: who answered and its measured quality")


class AttackRequest(BaseModel):
    model_config = ConfigDict(strict=True)
    text: str = Field(min_length=1, max_length=MAX_TEXT, description="Threat report text")
    max_techniques: int = Field(5, ge=1, le=20)


class Technique(BaseModel):
    technique_id: str
    name: str
    url: str
    tactics: list[str]
    evidence: str
    confidence: float
    components: Components | None = None
    needs_review: bool
    origin: Literal["stated", "inferred"] = Field("inferred", description="stated: the text writes this id; inferred: the answerers' judgement")
    span: list[int] | None = Field(None, description="stated: [start, end) of the id in the text")
    note: str | None = Field(None, description="stated: a revoked id mapped to its successor, or a deprecated one")
    flags: list[str] = Field(default_factory=list, description="stated: what is wrong with the id as written (revoked, deprecated)")


class Documented(BaseModel):
    """An ATT&CK software or group the text names, and the techniques ATT&CK documents for it: catalog knowledge about
    the actor, not a reading of this text (so never mixed into `techniques`)."""

    id: str
    name: str
    url: str
    named_as: str = Field(description="the name or alias as the text writes it")
    techniques: list[str]


class AttackResponse(BaseModel):
    techniques: list[Technique]
    documented: list[Documented] = Field(default_factory=list, description="ATT&CK software and groups the text names, "
                                         "with the techniques ATT&CK documents for each (look-up, not extraction)")
    needs_review: bool
    method: str
    note: str | None = Field(None, description="Set when the language model read only the start of a long text")
    answerer: dict[str, Answerer] | None = Field(None, description="per job: who answered and its measured quality")


class AskRequest(BaseModel):
    model_config = ConfigDict(strict=True)
    question: str = Field(min_length=1, max_length=MAX_TEXT)
    options: list[str] | None = Field(None, min_length=4, max_length=4, description="Exactly four options (A-D), or none")
    max_tokens: int = Field(256, ge=1)


class Citation(BaseModel):
    source: str = Field(description="the catalog: mitre-attack-enterprise, mitre-capec, mitre-cwe, misp-galaxy-threat-actor")
    id: str = Field(description="the entry: T1059.004, CAPEC-114, CWE-1256, G1015, M1038, or a MISP actor's name")
    field: str = Field(description="the entry's field the passage is: description, mitigation, detection, consequences, ...")
    url: str
    text: str = Field(description="the sentence (or passage) that decided the answer, as the catalog writes it")


class AskResponse(BaseModel):
    answer: str
    option: str | None = None
    confidence: float | None
    probabilities: dict[str, float] | None = None
    needs_review: bool
    note: str | None = None
    found: bool | None = Field(None, description="open-book answers: false when the catalogs hold nothing relevant")
    citations: list[Citation] | None = Field(None, description="open-book answers: the passages that decided it")
    method: str | None = None
    answerer: dict[str, Answerer] | None = Field(None, description="per job: who answered and its measured quality")


class AdvisoryRequest(BaseModel):
    model_config = ConfigDict(strict=True)
    text: str = Field(min_length=1, max_length=200_000, description="An advisory, bulletin or threat report")
    format: Literal["text", "markdown", "html"] = Field("text", description="html is reduced to its visible text; scripts never run")
    stix: bool = Field(False, description="Also return a STIX 2.1 bundle")
    misp: bool = Field(False, description="Also return a MISP event (core format, checked by PyMISP)")
