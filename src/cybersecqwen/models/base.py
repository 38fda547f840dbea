"""The backend interface: text in, text or numbers out. Backends know nothing about tasks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, Sequence

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class GenerationRequest:
    messages: Messages
    max_tokens: int = 512
    temperature: float = 0.0  # 0 means greedy
    stop: tuple[str, ...] = ()
    seed: int = 42
    prompt: str | None = None  # raw text for base models (few-shot); replaces the chat-formatted messages
    json_schema: str | None = None  # constrain the reply to this JSON schema ("{}": any JSON object)
    deadline: float | None = None  # time.monotonic() after which generation stops (a server request's timeout)


@dataclass(frozen=True)
class ChoiceRequest:
    """Score each choice as the start of the assistant's reply (after `prefix`)."""

    messages: Messages
    choices: tuple[str, ...]
    prefix: str = ""
    prompt: str | None = None  # raw text for base models, as in GenerationRequest


@dataclass
class BackendInfo:
    kind: str  # hf | llamacpp | openai
    model: str
    details: dict[str, Any] = field(default_factory=dict)


BASE_MODEL_HINT = "use --protocol cisco, which prompts base models 5-shot as Cisco's FAITH does"


@dataclass(frozen=True)
class ModelSpec:
    """A model argument resolved once (models.resolve_model): which backend loads it, and from where."""

    spec: str  # as the user wrote it: embedded, a folder, a .gguf file, openai:URL
    kind: str  # a key of models.BACKENDS
    location: str  # the folder, file or base URL the backend opens
    label: str | None = None  # how reports name it (the embedded model gets a readable name)


@dataclass(frozen=True)
class LoadOptions:
    dtype: str = "auto"
    device: str = "auto"
    batch_size: int = 8
    prefix_cache: bool = True


class Backend(Protocol):
    info: BackendInfo
    is_instruct: bool  # has a chat template; base models get raw few-shot prompts
    context_length: int | None  # tokens the model reads, prompt and answer together (None: unknown)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """One reply per request, in order; stop strings are cut from the reply."""

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        """The reply in pieces as they are generated (BackendBase: the whole reply as one piece)."""

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in the model's vocabulary, read as plain text (BackendBase: words, for servers that do not say)."""

    def prompt_length(self, messages: Messages) -> int | None:
        """Tokens of the chat prompt the messages make, template included (None: unknown)."""

    def score_choices(self, requests: Sequence[ChoiceRequest]) -> list[list[float]]:
        """Per request, the log-probability of each choice's tokens after the prompt."""

    def close(self) -> None: ...


class BackendBase:
    """Defaults for what a backend cannot do natively; each backend overrides what it can."""

    context_length: int | None = None  # tokens the model reads (prompt + answer); None: not known here

    def scoring_unavailable(self) -> str | None:
        """Why this backend cannot score candidates after a prompt (None: it can). Checked once at start by the
        structured endpoints, which then fuse without the model."""
        return None

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        yield self.generate([request])[0]  # type: ignore[attr-defined]

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def check_json_schema(self, json_schema: str) -> object:
        """Refuse (CybersecqwenError) a response_format schema this backend cannot constrain to, before any work
        starts. By default the schema is the upstream's to judge when it generates."""
        return None

    def prompt_length(self, messages: list[dict[str, str]]) -> int | None:
        """Tokens of the chat prompt these messages make (None where the backend cannot tell)."""
        request_ids = getattr(self, "request_ids", None)
        return len(request_ids(messages, None)) if request_ids else None


MARK = "\ue000{}\ue001"  # private-use characters around a message number: no template or vocabulary gives them meaning
MARKED = re.compile("\ue000(\\d+)\ue001")


def chat_pieces(render: Callable[[list[dict[str, str]]], str], messages: list[dict[str, str]]) -> list[tuple[str, bool]]:
    """The chat prompt as (text, is_template) pieces. Message contents are data: a pasted report that contains
    "<|im_end|>" must not close its turn, so only the template's own text may be read as special tokens. The template
    is rendered with numbered markers in place of the contents, then cut at them."""
    rendered = render([{**m, "content": MARK.format(i)} for i, m in enumerate(messages)])
    parts = MARKED.split(rendered)
    pieces = []
    for j, part in enumerate(parts):
        if j % 2:
            pieces.append((messages[int(part)]["content"], False))
        elif part:
            pieces.append((part, True))
    return pieces


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    positions = [text.find(s) for s in stop if s and s in text]
    return text[: min(positions)] if positions else text


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
