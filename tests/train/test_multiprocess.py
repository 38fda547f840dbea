"""Two processes under `accelerate launch --multi_gpu` on a CPU machine (torch.distributed with gloo; accelerate's
`--cpu` runs one process unless MPI is set up): rank 0 alone builds the corpus, both train the same
steps on halves of each batch, only rank 0 writes the adapter and summary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.train.test_sft import tiny_qwen3, write_recipe  # noqa: F401

pytestmark = pytest.mark.slow


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_cpu_processes_build_the_corpus_once_and_train(tiny_qwen3, source_mirror, tmp_path):  # noqa: F811
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    if accelerate is None:
        pytest.skip("accelerate's launcher is not installed beside this Python")
    recipe = write_recipe(tmp_path, base=str(tiny_qwen3), steps=3)
    out = tmp_path / "run"
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
               "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()), "-m", "cybersecqwen", "train", str(recipe),
               "--out", str(out), "--data-dir", str(source_mirror)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "CYBERSECQWEN_LOG": "INFO"})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert output.count("corpus built in") == 1, output[-3000:]  # one rank built it
    summary = json.loads((out / "train-summary.json").read_text())
    assert summary["global_step"] == 3 and summary["budget"]["rows_per_step"] == 4  # 2 per process x 2 processes
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert not list(tmp_path.glob("run/.corpus.*"))
