"""Backends: text in, text or numbers out; they know nothing about tasks.

`resolve_model(spec)` turns what a user wrote (`embedded`, an HF folder, a .gguf file, `openai:URL`) into a
ModelSpec once; `load_backend` opens it with the backend its kind names in BACKENDS.

To add a backend: write `models/NAME.py` with a class following `base.Backend` (subclass `BackendBase` for the
defaults) and a `from_spec(spec, options)` classmethod, add one line to BACKENDS, and teach `resolve_model` which
model arguments are its kind. Backends are imported on first use: `serve` on a GGUF file never imports torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.models.base import Backend, BackendInfo, ChoiceRequest, GenerationRequest, LoadOptions, ModelSpec

BACKENDS = {  # kind -> "module:Class"
    "hf": "cybersecqwen.models.hf:HFBackend",
    "llamacpp": "cybersecqwen.models.llamacpp:LlamaCppBackend",
    "openai": "cybersecqwen.models.openai:OpenAIBackend",
}
BACKEND_CHOICES = ("auto", *BACKENDS)
UNKNOWN_MODEL = "give 'embedded', a Hugging Face model folder, a .gguf file, or openai:BASE_URL"


def resolve_model(spec: str, backend: str = "auto") -> ModelSpec:
    """Check a model argument and decide how to open it, before any data or weights load."""
    if backend not in BACKEND_CHOICES:
        raise CybersecqwenError(f"unknown backend '{backend}' (choose one of: {', '.join(BACKEND_CHOICES)})")
    if spec.startswith("openai:"):
        return ModelSpec(spec, "openai", spec.removeprefix("openai:"))
    if spec == "embedded":
        from cybersecqwen.models import embedded

        if backend == "llamacpp":
            return ModelSpec(spec, "llamacpp", str(embedded.embedded_gguf()), "embedded:SmolLM2-135M-Instruct.Q4_1.gguf")
        return ModelSpec(spec, "hf", str(embedded.embedded_hf_dir()), "embedded:SmolLM2-135M-Instruct")
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise CybersecqwenError(f"model file {path} is not a .gguf file; give a GGUF file or an HF model folder")
        return ModelSpec(spec, "llamacpp", str(path))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CybersecqwenError(f"{path} is not a Hugging Face model folder (no config.json)")
        return ModelSpec(spec, "hf", str(path))
    raise CybersecqwenError(f"unknown model '{spec}': {UNKNOWN_MODEL}")


def hf_folder(spec: str, what: str, need_config: bool = True) -> Path:
    """A local Hugging Face folder (`embedded`: the cached conversion of the embedded model). `what` names the
    option in the error: nothing is ever fetched from a hub."""
    if spec == "embedded":
        return Path(resolve_model(spec).location)
    path = Path(spec).expanduser()
    if not path.is_dir() or (need_config and not (path / "config.json").is_file()):
        raise CybersecqwenError(f"{what}: '{spec}' is not a local Hugging Face folder; nothing is fetched from a hub, so "
                                "download the model once and point this at its folder")
    return path


def model_license(folder: Path) -> str | None:
    """The license a model folder declares (its card's `license:` front matter, else config.json's "license"); None
    when it declares none: a license is never guessed."""
    import json
    import re

    card = folder / "README.md"
    if card.is_file():
        match = re.match(r"---\n(.*?)\n---", card.read_text(encoding="utf-8"), re.S)
        found = re.search(r"(?m)^license:\s*[\"']?([\w.\-+]+)", match.group(1)) if match else None
        if found:
            return found.group(1)
    config = folder / "config.json"
    value = json.loads(config.read_text(encoding="utf-8")).get("license") if config.is_file() else None
    return value if isinstance(value, str) and value else None


def load_backend(model: str | ModelSpec, backend: str = "auto", dtype: str = "auto", device: str = "auto",
                 batch_size: int = 8, prefix_cache: bool = True) -> Backend:
    spec = model if isinstance(model, ModelSpec) else resolve_model(model, backend)
    module_name, _, class_name = BACKENDS[spec.kind].partition(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    return backend_class.from_spec(spec, LoadOptions(dtype, device, batch_size, prefix_cache))


__all__ = ["BACKENDS", "Backend", "BackendInfo", "ChoiceRequest", "GenerationRequest", "LoadOptions", "ModelSpec",
           "hf_folder", "load_backend", "model_license", "resolve_model"]
