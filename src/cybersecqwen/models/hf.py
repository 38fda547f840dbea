"""Transformers backend: batched greedy/sampled chat generation and fast choice scoring.

Choice scoring is the hot path of `--mode logprob`. Three things make it fast without changing answers:
- the prompt prefix shared by all items of a task (system prompt, chat header, the task's instructions) is
  run once and its key/value cache reused for every batch;
- items are sorted by length and right-padded, so no row attends to padding and no mask work is needed
  beyond the causal one;
- only the hidden state at each row's last real token goes through the LM head, and only the choices'
  rows of the vocabulary are read.
"""

from __future__ import annotations

import logging
import time
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
        self._prefix: tuple[tuple[int, ...], DynamicCache | None] = ((), None)
        self.info = BackendInfo("hf", label or str(path), {"device": self.device, "dtype": str(self.dtype).removeprefix("torch."),
                                                           "precision": str(precision),
                                                           "batch_size": self.batch_size, "prefix_cache": prefix_cache})

    def close(self) -> None:
        self._prefix = ((), None)

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
        if not contexts:
            return []
        prefix, cache = self._shared_prefix(contexts)
        p = len(prefix)
        order = sorted(range(len(contexts)), key=lambda i: len(contexts[i]))
        out: list[list[float]] = [[] for _ in contexts]
        decoder = self.model.get_decoder()
        head = self.model.get_output_embeddings()
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            suffixes = [contexts[i][p:] for i in batch]
            width = max(len(s) for s in suffixes)
            ids = torch.tensor([s + [self.pad_id] * (width - len(s)) for s in suffixes], device=self.device)
            past = None
            if cache is not None:
                past = DynamicCache(ddp_cache_data=[(k.expand(len(batch), -1, -1, -1), v.expand(len(batch), -1, -1, -1)) for k, v in cache])
            positions = torch.arange(p, p + width, device=self.device).unsqueeze(0).expand(len(batch), -1)
            attention = torch.ones(len(batch), p + width, dtype=torch.long, device=self.device)
            hidden = decoder(input_ids=ids, attention_mask=attention, position_ids=positions, past_key_values=past,
                             use_cache=cache is not None).last_hidden_state
            last = torch.tensor([len(s) - 1 for s in suffixes], device=self.device)
            logits = head(hidden[torch.arange(len(batch), device=self.device), last]).float()
            logprobs = torch.log_softmax(logits, dim=-1)
            for row, i in enumerate(batch):
                out[i] = logprobs[row, choice_ids[i]].tolist()
        return out

    def _shared_prefix(self, contexts: list[list[int]]) -> tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]] | None]:
        """The longest token prefix all contexts share (each keeps >= 1 own token), and its KV cache."""
        if not self.prefix_cache:
            return [], None
        shared = contexts[0]
        for c in contexts[1:]:
            shared = shared[: common_prefix_length(shared, c)]
        shared = shared[: min(len(c) for c in contexts) - 1]
        if len(shared) < 2:
            return [], None
        key = tuple(shared)
        cached_key, cached = self._prefix
        if cached_key != key:
            ids = torch.tensor([shared], device=self.device)
            result = self.model.get_decoder()(input_ids=ids, use_cache=True)
            kv = result.past_key_values
            cached = [(layer.keys, layer.values) for layer in kv.layers]
            self._prefix = (key, cached)
        return shared, cached

    def _sequence_logprob(self, context: list[int], target: list[int]) -> float:
        ids = torch.tensor([context + target], device=self.device)
        logits = self.model(input_ids=ids).logits[0, len(context) - 1 : -1].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        return float(logprobs[torch.arange(len(target)), torch.tensor(target)].sum())
