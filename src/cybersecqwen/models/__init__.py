"""Model resolution: `embedded`, an HF folder, a .gguf file or `openai:URL` -> a Backend."""

from __future__ import annotations

from pathlib import Path

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.models.base import Backend, BackendInfo, ChoiceRequest, GenerationRequest

BACKENDS = ("auto", "hf", "llamacpp", "openai")


def load_backend(model: str, backend: str = "auto", dtype: str = "auto", device: str = "auto",
                 batch_size: int = 8, prefix_cache: bool = True) -> Backend:
    if backend not in BACKENDS:
        raise CybersecqwenError(f"unknown backend '{backend}' (choose one of: {', '.join(BACKENDS)})")
    if model.startswith("openai:"):
        from cybersecqwen.models.openai import OpenAIBackend

        return OpenAIBackend(model.removeprefix("openai:"), concurrency=batch_size)
    if model == "embedded":
        from cybersecqwen.models import embedded

        if backend == "llamacpp":
            from cybersecqwen.models.llamacpp import LlamaCppBackend

            return LlamaCppBackend(embedded.embedded_gguf(), label="embedded:SmolLM2-135M-Instruct.Q4_1.gguf")
        from cybersecqwen.models.hf import HFBackend

        return HFBackend(embedded.embedded_hf_dir(), device, dtype, batch_size, prefix_cache,
                         label="embedded:SmolLM2-135M-Instruct")
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf" or backend == "llamacpp":
        from cybersecqwen.models.llamacpp import LlamaCppBackend

        return LlamaCppBackend(path)
    if path.is_dir():
        from cybersecqwen.models.hf import HFBackend

        return HFBackend(path, device, dtype, batch_size, prefix_cache)
    raise CybersecqwenError(
        f"unknown model '{model}': give 'embedded', a Hugging Face model folder, a .gguf file, or openai:BASE_URL"
    )


__all__ = ["Backend", "BackendInfo", "ChoiceRequest", "GenerationRequest", "load_backend"]
