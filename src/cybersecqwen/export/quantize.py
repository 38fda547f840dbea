"""GGUF quantization through llama-cpp-python's `llama_model_quantize` (llama.cpp's own quantizer)."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.io import atomic_path

# Name -> llama_ftype constant name in llama_cpp. K-quant "_M" mixes keep attention-V / FFN-down / output at more bits.
QUANT_TYPES = {
    "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "Q6_K": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "Q5_K_M": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
}


def parse_quants(text: str) -> list[str]:
    names = [q.strip().upper() for q in text.split(",") if q.strip()]
    unknown = [q for q in names if q not in QUANT_TYPES]
    if unknown:
        raise CybersecqwenError(f"unknown quantization {', '.join(unknown)}; choose from {', '.join(QUANT_TYPES)}")
    return names


def check_imatrix(imatrix: Path | None) -> None:
    if imatrix is not None:
        # llama.cpp's quantizer takes the importance matrix as an in-memory C++ map that only its own
        # `llama-quantize` tool builds; the Python bindings cannot pass one.
        raise CybersecqwenError("an importance matrix cannot be applied through llama-cpp-python's bindings; quantize "
                                "with llama.cpp's `llama-quantize --imatrix FILE` instead, or leave --imatrix out")


def quantize(source: Path, out_file: Path, quant: str, imatrix: Path | None = None, threads: int | None = None) -> Path:
    """Quantize an F16/BF16/F32 GGUF into `out_file` (atomically)."""
    import llama_cpp

    if quant not in QUANT_TYPES:
        raise CybersecqwenError(f"unknown quantization {quant}; choose from {', '.join(QUANT_TYPES)}")
    check_imatrix(imatrix)
    if not source.is_file():
        raise CybersecqwenError(f"{source} does not exist; convert the model to F16 first")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_TYPES[quant])
    params.nthread = threads or os.cpu_count() or 1
    from cybersecqwen.models.llamacpp import quiet_stderr

    with atomic_path(out_file) as tmp, quiet_stderr():  # llama.cpp logs every tensor on fd 2
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), ctypes.byref(params))
        if status != 0:
            raise CybersecqwenError(f"llama.cpp could not quantize {source} to {quant} (status {status})")
    return out_file
