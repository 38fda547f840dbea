"""What `auto` precision picks on each CPU kind this project runs on (recorded flag sets, tests/data/cpuinfo/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cybersecqwen.machine import choose_precision, parse_cpuinfo, this_cpu

CPUINFO = Path(__file__).parent / "data" / "cpuinfo"
KINDS = {  # file -> (native bf16, what auto trains in)
    "intel-xeon-amx.txt": (True, "bf16"),
    "amd-epyc-avx512-bf16.txt": (True, "bf16"),
    "amd-epyc-no-avx512.txt": (False, "fp32"),
}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_auto_trains_in_bf16_only_where_the_cpu_computes_it(name):
    cpu = parse_cpuinfo((CPUINFO / name).read_text())
    native, trained = KINDS[name]
    assert cpu.native_bf16 is native
    choice = choose_precision("auto", "train", cpu=cpu)
    assert choice.name == trained
    assert ("natively" in choice.reason) is native
    # Evaluation and serving score in fp32 on every CPU kind; an explicit setting always wins.
    assert choose_precision("auto", "eval", cpu=cpu).name == "fp32"
    assert choose_precision("auto", "serve", cpu=cpu).name == "fp32"
    assert choose_precision("bf16", "eval", cpu=cpu).name == "bf16"
    assert choose_precision("fp32", "train", cpu=cpu).reason == "set explicitly"


def test_the_description_names_the_model_and_the_flags_that_decide():
    cpu = parse_cpuinfo((CPUINFO / "intel-xeon-amx.txt").read_text())
    text = cpu.describe()
    assert text.startswith("Intel(R) Xeon(R)") and "amx_bf16" in text and "bf16 native" in text
    assert "bf16 emulated" in parse_cpuinfo((CPUINFO / "amd-epyc-no-avx512.txt").read_text()).describe()


def test_a_gpu_with_bf16_gets_bf16_for_every_use():
    for use in ("train", "eval", "serve"):
        assert choose_precision("auto", use, cuda=True, cuda_bf16=True).name == "bf16"
    assert choose_precision("auto", "train", cuda=True, cuda_bf16=False).name == "fp16"


def test_unknown_values_are_refused():
    with pytest.raises(ValueError, match="unknown precision 'int3'"):
        choose_precision("int3", "train")
    with pytest.raises(ValueError, match="unknown use"):
        choose_precision("auto", "export")


def test_this_machine_is_read():
    cpu = this_cpu()
    assert cpu.model and isinstance(cpu.flags, frozenset)
