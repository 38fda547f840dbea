"""Any OpenAI-compatible server (vLLM, Ollama, llama-server, a cybersecqwen server): chat completions, and candidate
scoring from prompt log-probabilities.

`--model openai:http://host:port/v1`; the model name comes from `#name` after the URL, else
CYBERSECQWEN_OPENAI_MODEL, else the server's first listed model. The API key comes from OPENAI_API_KEY.

Candidate scoring (what the structured endpoints' fusion needs): the chat prompt is rendered here with the model's
own chat template (CYBERSECQWEN_OPENAI_TEMPLATE: the same GGUF file, or the model's Hugging Face folder, whose
tokenizer carries the template), the candidate appended, and `/v1/completions` asked with `echo` and `logprobs` for
one token: the log-probabilities of the prompt's own tokens come back (vLLM and llama.cpp's servers do this), and the
candidate's score is the sum over its tokens (the last ones of the prompt; the generated token is set aside).
Candidates are scored concurrently. Without a template, or when the upstream returns no prompt log-probabilities,
`scoring_unavailable` says why once, and the structured endpoints fuse without the model.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from cybersecqwen.errors import CybersecqwenError, UpstreamError, UpstreamTimeout
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
        self.template_source = os.environ.get(TEMPLATE_ENV) or None
        self._render = None
        self._unavailable: str | None | bool = False  # False: not probed yet
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
        if self.template_source and any(r.prompt is None for r in requests):
            return self.score_by_echo(requests)
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(self._score, requests))

    # --- candidate scoring from prompt log-probabilities (/v1/completions, echo) ----------------------------------
    def render(self, messages: list[dict[str, str]]) -> str:
        if self._render is None:
            self._render = chat_renderer(self.template_source)
        return self._render(messages)

    def scoring_unavailable(self) -> str | None:
        """Probed once: a template to render prompts with, and an upstream that echoes prompt log-probabilities."""
        if self._unavailable is False:
            if not self.template_source:
                self._unavailable = (f"no chat template to render prompts with: set {TEMPLATE_ENV} to the served model's GGUF file or "
                                     "Hugging Face folder")
            else:
                try:
                    scores = self.score_by_echo([ChoiceRequest([{"role": "user", "content": "Say yes or no."}], ("yes", "no"))])[0]
                    self._unavailable = None if all(math.isfinite(x) for x in scores) else "the upstream's prompt log-probabilities are not finite"
                except CybersecqwenError as exc:
                    self._unavailable = f"the upstream cannot return prompt log-probabilities ({exc})"
        return self._unavailable

    def score_by_echo(self, requests: Sequence[ChoiceRequest]) -> list[list[float]]:
        jobs = [(self.render(r.messages) + r.prefix, choice) for r in requests for choice in r.choices]
        with ThreadPoolExecutor(self.concurrency) as pool:
            flat = list(pool.map(lambda job: self._echo_score(*job), jobs))
        out, i = [], 0
        for r in requests:
            out.append(flat[i:i + len(r.choices)])
            i += len(r.choices)
        return out

    def _echo_score(self, context: str, choice: str) -> float:
        """Sum of the log-probabilities of the choice's tokens: the last prompt tokens whose text covers the choice."""
        try:
            completion = self.client.completions.create(model=self.model, prompt=context + choice, max_tokens=1, temperature=0.0,
                                                        echo=True, logprobs=1)
        except self._openai.APITimeoutError as exc:
            raise UpstreamTimeout(f"upstream {self.info.model} timed out: {exc}") from None
        except self._openai.OpenAIError as exc:
            raise UpstreamError(f"upstream {self.info.model} failed: {exc}") from None
        logprobs = completion.choices[0].logprobs if completion.choices else None
        # The echoed tokens end with the generated ones (usage.completion_tokens); servers differ on whether the first
        # prompt token (BOS, which has no log-probability) is echoed, so the prompt's are counted from the end.
        generated = getattr(completion.usage, "completion_tokens", None) if completion.usage else None
        if logprobs is None or not logprobs.tokens or generated is None or len(logprobs.tokens) <= generated:
            raise UpstreamError(f"upstream {self.info.model} returned no prompt log-probabilities for an echoed prompt")
        tokens, values = logprobs.tokens[:len(logprobs.tokens) - generated], logprobs.token_logprobs[:len(logprobs.tokens) - generated]
        covered, total = 0, 0.0
        for token, value in zip(reversed(tokens), reversed(values)):
            if value is None or not math.isfinite(value):
                raise UpstreamError(f"upstream {self.info.model} returned a malformed log-probability ({value!r}) for {token!r}")
            total += value
            covered += len(token)
            if covered >= len(choice):
                return total
        raise UpstreamError(f"upstream {self.info.model}: the echoed prompt is shorter than the candidate {choice!r}")


TEMPLATE_ENV = "CYBERSECQWEN_OPENAI_TEMPLATE"


def chat_renderer(source: str):
    """messages -> the prompt text, with the chat template of a GGUF file (read with llama.cpp's vocabulary only, as
    the local backend renders it) or of a Hugging Face folder (its tokenizer's template)."""
    from pathlib import Path

    path = Path(source).expanduser()
    if path.is_file():
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        from cybersecqwen.models.llamacpp import quiet_stderr

        with quiet_stderr():
            vocab = Llama(model_path=str(path), vocab_only=True, verbose=False)
        template = vocab.metadata.get("tokenizer.chat_template")
        if not template:
            raise CybersecqwenError(f"{path} carries no chat template ({TEMPLATE_ENV})")
        eos = vocab.detokenize([vocab.token_eos()], special=True).decode("utf-8", "replace")
        bos = vocab.detokenize([vocab.token_bos()], special=True).decode("utf-8", "replace") if vocab.token_bos() >= 0 else ""
        formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        return lambda messages: formatter(messages=messages).prompt
    if path.is_dir():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path))
        if not tokenizer.chat_template:
            raise CybersecqwenError(f"{path} carries no chat template ({TEMPLATE_ENV})")
        return lambda messages: tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    raise CybersecqwenError(f"{TEMPLATE_ENV}={source}: no such GGUF file or model folder")


def response_format(json_schema: str | None) -> dict:
    """The upstream enforces the schema itself (vLLM, llama.cpp server and OpenAI all accept this form)."""
    if json_schema is None:
        return {}
    if json_schema == "{}":
        return {"response_format": {"type": "json_object"}}
    return {"response_format": {"type": "json_schema", "json_schema": {"name": "response", "schema": json.loads(json_schema)}}}
