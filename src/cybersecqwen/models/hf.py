"""Transformers backend: batched greedy/sampled chat generation and fast choice scoring.

Choice scoring is the hot path of `--mode logprob`. A request's scores are the same bits whatever was scored before
it or beside it: every context is computed in blocks of BLOCK tokens from its start, one forward per block over the
blocks before it, and the key/value cache of whole blocks is kept (keyed by their tokens) for the next context that
starts the same way (a task's system prompt and instructions). What a request computes, and in which shapes,
depends only on its own tokens, never on the batch it came in or the cache state: the earlier shared-prefix-per-batch
path gave a request other numbers in another batch. Only the hidden state at the last token goes through the LM
head. What was measured of its cost is in BENCHMARKS.md ("Issue 33: same request, same answer").
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList
from transformers.cache_utils import DynamicCache

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.machine import Precision, choose_precision
from cybersecqwen.models.base import (BASE_MODEL_HINT, BackendBase, BackendInfo, ChoiceRequest, GenerationRequest, LoadOptions,
                                      ModelSpec, chat_pieces, common_prefix_length, cut_at_stop)

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
BLOCK = 64  # tokens of one context block: the unit of computation and of cache reuse
CACHE_BYTES = 256 * 2**20  # whole blocks' key/value tensors kept between requests (least recently used dropped first)


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pick_dtype(dtype: str, device: str) -> tuple[torch.dtype, Precision]:
    """The dtype for scoring and generation, and why (machine.choose_precision: auto is fp32 on every CPU)."""
    if dtype != "auto" and dtype not in DTYPES:
        raise CybersecqwenError(f"unknown dtype '{dtype}' (choose auto, {', '.join(DTYPES)})")
    cuda = device.startswith("cuda")
    choice = choose_precision(dtype, "eval", cuda=cuda, cuda_bf16=cuda and torch.cuda.is_bf16_supported())
    return DTYPES[choice.name], choice


class PastDeadline(StoppingCriteria):
    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), time.monotonic() > self.deadline, dtype=torch.bool, device=input_ids.device)


class HFBackend(BackendBase):
    @classmethod
    def from_spec(cls, spec: ModelSpec, options: LoadOptions) -> "HFBackend":
        return cls(spec.location, options.device, options.dtype, options.batch_size, options.prefix_cache, label=spec.label)

    def __init__(
        self,
        path: Path | str,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        prefix_cache: bool = True,
        label: str | None = None,
        token_budget: int = 4096,
    ) -> None:
        path = Path(path)
        if not (path / "config.json").is_file():
            raise CybersecqwenError(f"{path} is not a Hugging Face model folder (no config.json)")
        self.device = pick_device(device)
        self.dtype, precision = pick_dtype(dtype, self.device)
        log.info("precision: %s", precision)
        self.batch_size = max(1, batch_size)
        self.prefix_cache = prefix_cache
        self.token_budget = token_budget
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype).to(self.device).eval()
            self.context_length = getattr(self.model.config, "max_position_embeddings", None)
        except (OSError, ValueError) as exc:
            raise CybersecqwenError(f"cannot load the model in {path}: {exc}") from None
        self.is_instruct = self.tokenizer.chat_template is not None
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self._blocks: OrderedDict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
        self._block_bytes = 0
        self.info = BackendInfo("hf", label or str(path), {"device": self.device, "dtype": str(self.dtype).removeprefix("torch."),
                                                           "precision": str(precision),
                                                           "batch_size": self.batch_size, "prefix_cache": prefix_cache})

    def close(self) -> None:
        self._blocks.clear()
        self._block_bytes = 0

    # --- text ---------------------------------------------------------------------------------------------
    def prompt_text(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def encode(self, text: str, raw: bool = False) -> list[int]:
        # The chat template already holds any BOS the model wants; a raw base-model prompt gets the tokenizer's.
        return self.tokenizer(text, add_special_tokens=raw)["input_ids"]

    def request_ids(self, messages: list[dict[str, str]], prompt: str | None, suffix: str = "") -> list[int]:
        if prompt is not None:
            return self.encode(prompt + suffix, raw=True)
        if not self.is_instruct:
            raise CybersecqwenError(f"{self.info.model} is a base model (no chat template); {BASE_MODEL_HINT}")
        # Only the template's own markers are special tokens; message contents and the answer suffix are data
        # (split_special_tokens: "<|im_end|>" inside a pasted report stays text).
        ids: list[int] = []
        for text, is_template in chat_pieces(self.prompt_text, messages) + [(suffix, False)]:
            if text:
                ids += self.tokenizer(text, add_special_tokens=False, split_special_tokens=not is_template)["input_ids"]
        return ids

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])

    # --- generation ---------------------------------------------------------------------------------------
    def check_json_schema(self, json_schema: str) -> object:
        raise CybersecqwenError("JSON-constrained replies (response_format) need the GGUF backend (llama.cpp grammars); "
                                "serve a .gguf file, or drop response_format")

    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        for request in requests:
            if request.json_schema is not None:
                self.check_json_schema(request.json_schema)
        encoded = [self.request_ids(r.messages, r.prompt) for r in requests]
        order = sorted(range(len(requests)), key=lambda i: len(encoded[i]))
        replies: list[str] = [""] * len(requests)
        # Requests of one batch must share sampling settings; group by them, then by length.
        for batch in self._token_batches(order, [len(e) for e in encoded]):
            groups: dict[tuple, list[int]] = {}
            for i in batch:
                r = requests[i]
                groups.setdefault((r.max_tokens, r.temperature, r.stop, r.seed, r.deadline), []).append(i)
            for (max_tokens, temperature, stop, seed, deadline), members in groups.items():
                texts = self._generate_batch([encoded[i] for i in members], max_tokens, temperature, stop, seed, deadline)
                for i, text in zip(members, texts):
                    replies[i] = text
        return replies

    def _token_batches(self, order: list[int], lengths: list[int]) -> list[list[int]]:
        """Consecutive (length-sorted) batches of at most batch_size rows and token_budget padded tokens.

        Long prompts (CTI-TAA reports run to 7k tokens) go alone: a padded batch of them costs more in
        attention-mask memory on the CPU than it saves.
        """
        batches: list[list[int]] = []
        current: list[int] = []
        for i in order:
            width = max([lengths[j] for j in current] + [lengths[i]])
            if current and (len(current) >= self.batch_size or width * (len(current) + 1) > self.token_budget):
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    def _generate_batch(self, prompts: list[list[int]], max_tokens: int, temperature: float,
                        stop: tuple[str, ...], seed: int, deadline: float | None = None) -> list[str]:
        width = max(len(p) for p in prompts)
        # Left padding so every row's next token follows its own last prompt token.
        input_ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], device=self.device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        sampling = temperature > 0
        if sampling:
            torch.manual_seed(seed)
        output = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            max_new_tokens=max_tokens,
            do_sample=sampling,
            temperature=temperature if sampling else None,
            top_p=1.0 if sampling else None,
            top_k=0 if sampling else None,
            stop_strings=list(stop) or None,
            tokenizer=self.tokenizer if stop else None,
            pad_token_id=self.pad_id,
            # A server request's deadline stops generation there, so a timed-out request frees the model.
            stopping_criteria=StoppingCriteriaList([PastDeadline(deadline)]) if deadline is not None else None,
        )
        texts = self.tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
        return [cut_at_stop(text, stop) for text in texts]

    # --- choice scoring ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def score_choices(self, requests: Sequence[ChoiceRequest]) -> list[list[float]]:
        contexts: list[list[int]] = []
        targets: list[list[list[int]]] = []
        for request in requests:
            sequences = [self.request_ids(request.messages, request.prompt, request.prefix + choice) for choice in request.choices]
            shared = sequences[0]
            for seq in sequences[1:]:
                shared = shared[: common_prefix_length(shared, seq)]
            contexts.append(shared)
            targets.append([seq[len(shared):] for seq in sequences])
        if any(not t for choice_targets in targets for t in choice_targets):
            raise CybersecqwenError("two choices tokenize identically; choice scoring needs distinct choices")
        single = [i for i, t in enumerate(targets) if all(len(x) == 1 for x in t)]
        scores: list[list[float]] = [[] for _ in requests]
        for i, row in zip(single, self._score_next_token([contexts[i] for i in single], [[x[0] for x in targets[i]] for i in single])):
            scores[i] = row
        single_set = set(single)
        for i in (i for i in range(len(requests)) if i not in single_set):
            scores[i] = [self._sequence_logprob(contexts[i], target) for target in targets[i]]
        return scores

    def _score_next_token(self, contexts: list[list[int]], choice_ids: list[list[int]]) -> list[list[float]]:
        return [self._next_token_logprobs(context)[ids].tolist() for context, ids in zip(contexts, choice_ids)]

    def _next_token_logprobs(self, context: list[int]) -> torch.Tensor:
        """Log-probabilities of the token after `context`: its whole blocks (cached), then the rest in one forward."""
        whole = (len(context) - 1) // BLOCK * BLOCK  # the last forward holds >= 1 token: its logits are the answer
        hidden = self._forward(context[whole:], whole, self._past(context[:whole])).last_hidden_state
        logits = self.model.get_output_embeddings()(hidden[:, -1]).float()
        return torch.log_softmax(logits, dim=-1)[0]

    def _past(self, tokens: list[int]) -> DynamicCache:
        """The key/value cache of `tokens` (a whole number of blocks), each block computed over the ones before it."""
        layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        for end in range(BLOCK, len(tokens) + 1, BLOCK):
            key = tuple(tokens[:end])
            block = self._blocks.get(key)
            if block is None:
                block = self._compute_block(tokens[end - BLOCK : end], end - BLOCK, layers)
                self._keep(key, block)
            else:
                self._blocks.move_to_end(key)
            layers = block if not layers else [(torch.cat([k, bk], dim=2), torch.cat([v, bv], dim=2))
                                               for (k, v), (bk, bv) in zip(layers, block)]
        return DynamicCache(ddp_cache_data=layers) if layers else DynamicCache()

    def _forward(self, tokens: list[int], start: int, past: DynamicCache):
        """The decoder over `tokens` at positions start.. after the cache `past` (which it extends)."""
        ids = torch.tensor([tokens], device=self.device)
        positions = torch.arange(start, start + len(tokens), device=self.device).unsqueeze(0)
        return self.model.get_decoder()(input_ids=ids, position_ids=positions, past_key_values=past, use_cache=True)

    def _compute_block(self, block: list[int], start: int, layers) -> list[tuple[torch.Tensor, torch.Tensor]]:
        result = self._forward(block, start, DynamicCache(ddp_cache_data=layers) if layers else DynamicCache())
        return [(layer.keys[:, :, start:].clone(), layer.values[:, :, start:].clone()) for layer in result.past_key_values.layers]

    def _keep(self, key: tuple[int, ...], block: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        if not self.prefix_cache:
            return
        self._blocks[key] = block
        self._block_bytes += sum(k.nbytes + v.nbytes for k, v in block)
        while self._block_bytes > CACHE_BYTES and len(self._blocks) > 1:
            _, dropped = self._blocks.popitem(last=False)
            self._block_bytes -= sum(k.nbytes + v.nbytes for k, v in dropped)

    def _sequence_logprob(self, context: list[int], target: list[int]) -> float:
        ids = torch.tensor([context + target], device=self.device)
        logits = self.model(input_ids=ids).logits[0, len(context) - 1 : -1].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        return float(logprobs[torch.arange(len(target)), torch.tensor(target)].sum())
