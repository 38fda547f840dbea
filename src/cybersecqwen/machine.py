"""What this machine computes natively, and the precision `auto` picks from it.

This project's CPUs differ between sessions: an Intel Xeon with AMX, an AMD EPYC with AVX-512 BF16, an AMD EPYC
with no AVX-512 at all. bf16 is fast only where the CPU has instructions for it (AMX-BF16 or AVX512_BF16); elsewhere
torch emulates it and it is 3-4x slower than fp32 end to end (BENCHMARKS.md, "Issue 33: same request, same answer").

The rule `auto` follows, per use:
- training: bf16 where the device computes it natively (CUDA with bf16, or a CPU with AMX-BF16 / AVX512_BF16; the
  LoRA matrices stay fp32 either way), else fp32;
- evaluation and serving of transformers models: fp32 on every CPU (bf16 flips near-tie choices against fp32: the
  share measured is in BENCHMARKS.md, so the answers a CPU gives are fp32's), bf16 on a CUDA GPU that has it.
An explicit precision in a recipe or on the command line always wins.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo spellings
RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")
PRECISIONS = ("bf16", "fp16", "fp32")
USES = ("train", "eval", "serve")


@dataclass(frozen=True)
class Cpu:
    model: str
    flags: frozenset[str]

    @property
    def native_bf16(self) -> bool:
        return any(flag in self.flags for flag in NATIVE_BF16_FLAGS)

    def describe(self) -> str:
        shown = [flag for flag in RELEVANT_FLAGS if flag in self.flags] or ["no AVX2"]
        return f"{self.model} ({' '.join(shown)}; bf16 {'native' if self.native_bf16 else 'emulated'})"


def parse_cpuinfo(text: str) -> Cpu:
    """The first processor's model name and flags from /proc/cpuinfo's text."""
    model, flags = None, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and flags is None:
            flags = frozenset(value.split())
    return Cpu(model or platform.processor() or "unknown CPU", flags or frozenset())


@functools.lru_cache(maxsize=1)
def this_cpu() -> Cpu:
    path = Path("/proc/cpuinfo")
    return parse_cpuinfo(path.read_text(errors="replace")) if path.is_file() else Cpu(platform.processor() or "unknown CPU", frozenset())


@dataclass(frozen=True)
class Precision:
    """A precision and why it was chosen: the line a run prints once and records."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def choose_precision(requested: str, use: str, cuda: bool = False, cuda_bf16: bool = False, cpu: Cpu | None = None) -> Precision:
    """`requested` (auto, bf16, fp16, fp32) for `use` (train, eval, serve) on this machine, or on `cpu` when given."""
    if use not in USES:
        raise ValueError(f"unknown use {use!r} (choose {', '.join(USES)})")
    if requested != "auto":
        if requested not in PRECISIONS:
            raise ValueError(f"unknown precision {requested!r} (choose auto, {', '.join(PRECISIONS)})")
        return Precision(requested, "set explicitly")
    if cuda:
        return Precision("bf16", "auto: CUDA GPU with bf16") if cuda_bf16 else Precision("fp16" if use == "train" else "fp32",
                                                                                          "auto: CUDA GPU without bf16")
    cpu = cpu or this_cpu()
    if use != "train":
        return Precision("fp32", "auto: CPU evaluation and serving score in fp32 (bf16 flips near-tie answers)")
    if cpu.native_bf16:
        return Precision("bf16", "auto: the CPU computes bf16 natively (" +
                         "/".join(f for f in NATIVE_BF16_FLAGS if f in cpu.flags) + ")")
    return Precision("fp32", "auto: the CPU has no bf16 instructions (AMX-BF16 or AVX512_BF16); emulated bf16 is slower than fp32")
