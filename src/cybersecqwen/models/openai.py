"""Any OpenAI-compatible server (vLLM, Ollama, llama-server, a cybersecqwen server): chat completions.

`--model openai:http://host:port/v1`; the model name comes from `#name` after the URL, else
CYBERSECQWEN_OPENAI_MODEL, else the server's first listed model. The API key comes from OPENAI_API_KEY.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.models.base import BackendBase, BackendInfo, ChoiceRequest, GenerationRequest, LoadOptions, ModelSpec, cut_at_stop


class OpenAIBackend(BackendBase):
    @classmethod
    def from_spec(cls, spec: ModelSpec, options: LoadOptions) -> "OpenAIBackend":
        return cls(spec.location, concurrency=options.batch_size)

    def __init__(self, spec: str, concurrency: int = 8, timeout: float = 600.0) -> None:
        import openai

        base_url, _, model = spec.partition("#")
        if not base_url.startswith(("http://", "https://")):
            raise CybersecqwenError(f"'openai:{spec}' needs an http(s) base URL, e.g. openai:http://127.0.0.1:8000/v1")
        self._openai = openai
        self.client = openai.OpenAI(base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY") or "none", timeout=timeout,
                                    max_retries=2)
        self.model = model or os.environ.get("CYBERSECQWEN_OPENAI_MODEL") or self._first_model(base_url)
        self.concurrency = max(1, concurrency)
        self.info = BackendInfo("openai", f"{base_url}#{self.model}", {"concurrency": self.concurrency})
        # A server may host either kind; chat endpoints imply instruct, raw prompts use /completions.
        self.is_instruct = True

    def _first_model(self, base_url: str) -> str:
        try:
            models = self.client.models.list().data
        except self._openai.OpenAIError as exc:
            raise CybersecqwenError(f"cannot list models at {base_url}: {exc}") from None
        if not models:
            raise CybersecqwenError(f"{base_url} serves no models; name one with openai:URL#MODEL")
        return models[0].id

    def close(self) -> None:
        self.client.close()

    def _complete(self, request: GenerationRequest) -> str:
        if request.prompt is not None:
            try:
                completion = self.client.completions.create(
                    model=self.model, prompt=request.prompt, max_tokens=request.max_tokens, temperature=request.temperature,
                    top_p=1.0, stop=list(request.stop) or None, seed=request.seed)
            except self._openai.OpenAIError as exc:
                raise CybersecqwenError(f"server {self.info.model} failed: {exc}") from None
            return cut_at_stop(completion.choices[0].text or "", request.stop)
        try:
            response = self.client.chat.completions.create(
                model=self.model,
                messages=request.messages,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                top_p=1.0,
                stop=list(request.stop) or None,
                seed=request.seed,
                **response_format(request.json_schema),
            )
        except self._openai.OpenAIError as exc:
            raise CybersecqwenError(f"server {self.info.model} failed: {exc}") from None
        return cut_at_stop(response.choices[0].message.content or "", request.stop)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(self._complete, requests))

    def _score(self, request: ChoiceRequest) -> list[float]:
        if request.prefix or request.prompt is not None:
            raise CybersecqwenError(
                "choice scoring after an assistant prefix (the cisco MCQ prompt) or of a raw base-model prompt needs a local backend; "
                "use --mode generate with an openai: model"
            )
        try:
            response = self.client.chat.completions.create(
                model=self.model, messages=request.messages, max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=20
            )
        except self._openai.OpenAIError as exc:
            raise CybersecqwenError(f"server {self.info.model} failed: {exc}") from None
        content = response.choices[0].logprobs.content if response.choices[0].logprobs else None
        if not content:
            raise CybersecqwenError(f"server {self.info.model} returned no logprobs; use --mode generate")
        # Tokens that differ only by whitespace (" B" / "B") are the same choice: their probabilities add up.
        top: dict[str, float] = {}
        for entry in content[0].top_logprobs:
            key = entry.token.strip()
            top[key] = float(np.logaddexp(top[key], entry.logprob)) if key in top else entry.logprob
        # A choice outside the server's top-20 gets -inf: it was not a contender (all -inf: the runner records a failure).
        return [top.get(choice, -math.inf) for choice in request.choices]

    def score_choices(self, requests: Sequence[ChoiceRequest]) -> list[list[float]]:
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(self._score, requests))


def response_format(json_schema: str | None) -> dict:
    """The upstream enforces the schema itself (vLLM, llama.cpp server and OpenAI all accept this form)."""
    if json_schema is None:
        return {}
    if json_schema == "{}":
        return {"response_format": {"type": "json_object"}}
    return {"response_format": {"type": "json_schema", "json_schema": {"name": "response", "schema": json.loads(json_schema)}}}
