"""llama.cpp backend (GGUF files through llama-cpp-python): single-stream generation and choice scoring.

llama.cpp keeps one key/value cache per context; consecutive prompts that share a prefix (a task's
instructions) reuse it. llama.cpp's numbers for a token depend on the batch it was evaluated in (its CPU kernels
differ by batch shape), so reusing "whatever the last request left" made a request's scores depend on the request
before it (-85.216 vs -85.130 for the same choice on an AMD EPYC). Every prompt is therefore evaluated in fixed blocks
of BLOCK tokens counted from its start, and only whole blocks computed that way are reused: each position is computed
in the same batch whatever came before, so a request's scores and greedy replies are the same bits in any order, on a
fresh or a used context (tests/models/test_backends.py; BENCHMARKS.md, "Issue 33: same request, same answer").
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.models.base import (BASE_MODEL_HINT, BackendBase, BackendInfo, ChoiceRequest, GenerationRequest, LoadOptions,
                                      ModelSpec, chat_pieces, common_prefix_length, cut_at_stop)

log = logging.getLogger(__name__)


BLOCK = 64  # tokens of one prompt block: the unit of evaluation and of cache reuse


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


class LlamaCppBackend(BackendBase):
    @classmethod
    def from_spec(cls, spec: ModelSpec, options: LoadOptions) -> "LlamaCppBackend":
        return cls(spec.location, label=spec.label)

    def __init__(self, path: Path | str, n_ctx: int = 4096, n_threads: int | None = None, seed: int = 42,
                 label: str | None = None) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        path = Path(path)
        if not path.is_file():
            raise CybersecqwenError(f"GGUF file {path} does not exist")
        with path.open("rb") as handle:
            if handle.read(4) != b"GGUF":
                raise CybersecqwenError(f"{path} is not a GGUF file (bad magic bytes)")
        try:
            # llama.cpp prints its load log on fd 2; keep the CLI's stderr for our one-line errors.
            # No mmap: on x86 llama.cpp repacks most Q4_K tensors into an interleaved copy for its CPU kernels, and
            # with the file mapped the pages it read them from stay resident too. Qwen3-4B's Q4_K_M at a 4k context:
            # 5.09 GB RSS mapped, 3.34 GB loaded (benchmarks/qwen3_4b_shape.py; same tokens/s).
            with quiet_stderr():
                self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads or os.cpu_count(),
                                 seed=seed, verbose=False, use_mmap=False)
        except (ValueError, RuntimeError) as exc:
            raise CybersecqwenError(f"llama.cpp cannot load {path}: {exc}") from None
        template = self.llm.metadata.get("tokenizer.chat_template")
        self.is_instruct = bool(template)
        eos = self.llm.detokenize([self.llm.token_eos()], special=True).decode("utf-8", "replace")
        bos = self.llm.detokenize([self.llm.token_bos()], special=True).decode("utf-8", "replace") if self.llm.token_bos() >= 0 else ""
        self.formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos) if template else None
        self.info = BackendInfo("llamacpp", label or str(path), {"n_ctx": n_ctx, "n_threads": n_threads or os.cpu_count()})
        self.context_length = self.llm.n_ctx()
        self._aligned = 0  # cache positions [0, _aligned) hold whole blocks evaluated alone (reusable)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.llm.close()

    def prompt_text(self, messages: list[dict[str, str]]) -> str:
        return self.formatter(messages=messages).prompt

    def request_ids(self, messages: list[dict[str, str]], prompt: str | None, suffix: str = "") -> list[int]:
        if prompt is not None:
            # Raw base-model text: special-token spellings in it are data, not control tokens.
            return self.llm.tokenize((prompt + suffix).encode("utf-8"), add_bos=True, special=False)
        if self.formatter is None:
            raise CybersecqwenError(f"{self.info.model} is a base model (no chat template); {BASE_MODEL_HINT}")
        # Only the template's own markers are special tokens; message contents and the answer suffix are data.
        ids: list[int] = []
        for text, is_template in chat_pieces(self.prompt_text, messages) + [(suffix, False)]:
            if text:
                ids += self.llm.tokenize(text.encode("utf-8"), add_bos=not ids, special=is_template)
        return ids

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def check_json_schema(self, json_schema: str):
        """The grammar for a JSON schema, parsed by llama.cpp itself first. llama-cpp-python hands a grammar llama.cpp
        refuses to the sampler as a null pointer and the process dies at the first token (a string with maxLength
        1,200 is enough); parsing it here turns every such schema, however it is written, into a clear error."""
        from llama_cpp import LlamaGrammar
        from llama_cpp import llama_cpp as capi
        from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

        try:
            text = JSON_GBNF if json_schema == "{}" else _grammar_of(json_schema, json_schema_to_gbnf)
        except Exception as exc:  # noqa: BLE001 - any schema the converter rejects is the caller's error
            raise CybersecqwenError(f"this JSON schema cannot be turned into a grammar: {str(exc)[:200]}") from None
        with _grammar_log_muted():  # llama.cpp prints a refused grammar whole: a client must not fill the log
            sampler = capi.llama_sampler_init_grammar(self.llm._model.vocab, text.encode("utf-8"), b"root")
        if not sampler:
            raise CybersecqwenError("llama.cpp's grammar parser refused the grammar this JSON schema makes: over its "
                                    "repetition limits (lower maxLength/maxItems/pattern bounds) or a construct it cannot "
                                    "express (e.g. \\d in a pattern: write [0-9])")
        capi.llama_sampler_free(sampler)
        return LlamaGrammar.from_string(text, verbose=False)

    def _completion(self, request: GenerationRequest, stream: bool = False):
        # The grammar masks every token that would break the schema: the reply parses by construction.
        grammar = None if request.json_schema is None else self.check_json_schema(request.json_schema)
        prompt = self.request_ids(request.messages, request.prompt)
        # The prompt evaluated here in its blocks; llama-cpp-python then finds it cached whole and samples from its
        # last logits (its own prefix reuse would evaluate the rest in whatever batch the last request left).
        self._evaluate(prompt)
        self.llm._requires_eval = False
        return self.llm.create_completion(
            prompt=prompt,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=1.0,
            top_k=0 if request.temperature > 0 else 40,
            stop=list(request.stop) or None,
            seed=request.seed,
            grammar=grammar,
            stream=stream,
            stopping_criteria=_past(request.deadline),
        )

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        return [cut_at_stop(self._completion(r)["choices"][0]["text"], r.stop) for r in requests]

    def stream(self, request: GenerationRequest):
        """Text pieces as llama.cpp produces them (stop strings are held back by llama-cpp-python)."""
        for chunk in self._completion(request, stream=True):
            text = chunk["choices"][0]["text"]
            if text:
                yield text

    def score_choices(self, requests: Sequence[ChoiceRequest]) -> list[list[float]]:
        out = []
        for request in requests:
            sequences = [self.request_ids(request.messages, request.prompt, request.prefix + choice) for choice in request.choices]
            shared = sequences[0]
            for seq in sequences[1:]:
                shared = shared[: common_prefix_length(shared, seq)]
            if any(len(seq) == len(shared) for seq in sequences):
                raise CybersecqwenError("two choices tokenize identically; choice scoring needs distinct choices")
            first = self._next_logprobs(shared)
            scores = []
            for seq in sequences:
                target = seq[len(shared):]
                total = float(first[target[0]])
                if len(target) > 1:
                    rows = self._continuation_logprobs(len(shared), target[:-1])
                    total += sum(float(row[token]) for row, token in zip(rows, target[1:]))
                scores.append(total)
            out.append(scores)
        return out

    def _continuation_logprobs(self, kept: int, tokens: list[int]) -> list[np.ndarray]:
        """Log-probabilities of the next token after each of `tokens`, evaluated after the first `kept` cached tokens
        in one decode (a multi-token choice costs one call, not one per token)."""
        llm = self.llm
        if len(tokens) > llm.n_batch:  # longer than one batch: token by token through the cached prefix
            context = list(llm.input_ids[:kept])
            return [self._next_logprobs(context + tokens[: i + 1]) for i in range(len(tokens))]
        llm.n_tokens = kept
        llm._ctx.kv_cache_seq_rm(-1, kept, -1)  # the previous choice's tokens leave the cache
        llm._batch.set_batch(batch=tokens, n_past=kept, logits_all=True)
        llm._ctx.decode(llm._batch)
        llm.input_ids[kept : kept + len(tokens)] = tokens
        llm.n_tokens = kept + len(tokens)
        return [self._logprobs_at(i) for i in range(len(tokens))]

    def _next_logprobs(self, tokens: list[int]) -> np.ndarray:
        """Log-probabilities of the token after `tokens` (evaluated in blocks, reusing the whole blocks cached)."""
        self._evaluate(tokens)
        return self._logprobs_at(-1)

    def _evaluate(self, tokens: list[int]) -> None:
        """Make the context hold `tokens`, with the logits of the last one, computed as on a fresh context: positions
        in blocks of BLOCK from the start (the last block partial), each block one decode. The cached blocks this call
        shares with the last one are kept; everything after them is evaluated again."""
        llm = self.llm
        if not tokens:
            raise CybersecqwenError("nothing to evaluate: the prompt tokenized to no tokens")
        if len(tokens) > llm.n_ctx():
            raise CybersecqwenError(f"the prompt is {len(tokens)} tokens; this model's context holds {llm.n_ctx()}")
        shared = common_prefix_length(list(llm.input_ids[: llm.n_tokens]), tokens)
        keep = min(shared, self._aligned, len(tokens) - 1) // BLOCK * BLOCK  # >= 1 token evaluated: its logits are needed
        llm._ctx.kv_cache_seq_rm(-1, keep, -1)
        llm.n_tokens = self._aligned = keep
        for start in range(keep, len(tokens), BLOCK):
            block = tokens[start : start + BLOCK]
            llm._batch.set_batch(batch=block, n_past=start, logits_all=False)
            llm._ctx.decode(llm._batch)
            llm.input_ids[start : start + len(block)] = block
            llm.n_tokens = start + len(block)
            if len(block) == BLOCK:
                self._aligned = start + BLOCK

    def _logprobs_at(self, index: int) -> np.ndarray:
        """Log-probabilities from the logits of one position of the last decode (-1: its last)."""
        import llama_cpp

        pointer = llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, index)
        logits = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(self.llm.n_vocab(),))
        return _log_softmax(logits.astype(np.float64))


REF_STAND_IN = "cybersecqwenrefproperty"  # a property named "$ref", renamed while llama-cpp-python converts the schema


def _grammar_of(json_schema: str, convert) -> str:
    """llama-cpp-python's converter reads every "$ref" key as a reference, a property named "$ref" too (valid JSON
    Schema; it failed with "unhashable type: 'dict'"): such properties are converted under a stand-in name, and the
    name's JSON literal is written back into the grammar."""
    schema = json.loads(json_schema)
    if not _rename_ref_properties(schema):
        return convert(json_schema)
    return convert(json.dumps(schema)).replace(f'\\"{REF_STAND_IN}\\"', '\\"$ref\\"')


def _rename_ref_properties(node) -> bool:
    renamed = False
    if isinstance(node, list):
        return any([_rename_ref_properties(item) for item in node])
    if not isinstance(node, dict):
        return False
    properties = node.get("properties")
    if isinstance(properties, dict) and "$ref" in properties:
        node["properties"] = {REF_STAND_IN if name == "$ref" else name: value for name, value in properties.items()}
        if isinstance(node.get("required"), list):
            node["required"] = [REF_STAND_IN if name == "$ref" else name for name in node["required"]]
        renamed = True
    for key, value in node.items():
        if key not in ("enum", "const", "default", "examples"):
            renamed = _rename_ref_properties(value) or renamed
    return renamed


def _past(deadline: float | None):
    """A llama.cpp stopping criterion: stop generating once the caller's deadline has passed."""
    if deadline is None:
        return None
    from llama_cpp import StoppingCriteriaList

    return StoppingCriteriaList([lambda input_ids, logits: time.monotonic() > deadline])


_log_lock = threading.Lock()


@contextlib.contextmanager
def _grammar_log_muted():
    """llama.cpp's grammar parser writes a refused grammar to fd 2 itself (fprintf): silenced, one check at a time."""
    with _log_lock, quiet_stderr():
        yield


@contextlib.contextmanager
def quiet_stderr():
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
