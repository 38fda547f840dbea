"""The command line as a user meets it: one clear line and exit code 2 for every mistake, JSON from `score`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "cybersecqwen", *args], capture_output=True, text=True, env=full_env, timeout=600)


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def env(fixture_mirror: Path) -> dict[str, str]:
    return {"CYBERSECQWEN_DATA_DIR": str(fixture_mirror), "CYBERSECQWEN_ALLOW_UNPINNED": "1",
            "CYBERSECQWEN_CACHE_DIR": os.environ["CYBERSECQWEN_CACHE_DIR"]}


def test_score_prints_official_strict_and_counts(tmp_path, env):
    responses = write_lines(tmp_path / "r.jsonl", [
        json.dumps({"index": 0, "response": "Use after free.\nCWE-416"}),
        json.dumps({"index": 1, "response": "Looks like XSS: CWE-79 but also CWE-89"}),
        json.dumps({"index": 2, "response": "I am not sure."}),
        # index 3 missing: counts as invalid
    ])
    result = cli("score", "cti-rcm", "--responses", str(responses), env=env)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["official"]["accuracy"] == pytest.approx(0.5)  # CWE-416 right, last id CWE-89 wrong
    assert payload["metrics"]["strict_accuracy"] == pytest.approx(0.25)
    assert (payload["metrics"]["n"], payload["metrics"]["valid"], payload["metrics"]["invalid"]) == (4, 2, 2)
    cisco = json.loads(cli("score", "cti-rcm", "--responses", str(responses), "--protocol", "cisco", env=env).stdout)
    assert cisco["official"]["accuracy"] == pytest.approx(0.25)  # two different ids: no proper answer


def test_score_vsp_and_mcq_from_saved_text(tmp_path, env):
    vsp = write_lines(tmp_path / "v.jsonl", [json.dumps({"index": 0, "response": "AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}),
                                             json.dumps({"index": 1, "response": "AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"})])
    payload = json.loads(cli("score", "cti-vsp", "--responses", str(vsp), env=env).stdout)
    assert payload["official"]["mad"] == pytest.approx((0 + 4.3) / 2)
    mcq = write_lines(tmp_path / "m.jsonl", [json.dumps({"index": i, "response": r}) for i, r in enumerate(["A", "Answer: B", "C", "B"])])
    payload = json.loads(cli("score", "cti-mcq", "--responses", str(mcq), env=env).stdout)
    assert payload["official"]["accuracy"] == pytest.approx(0.75)  # "Answer: B" ends with B


@pytest.mark.parametrize(
    "lines, fragments",
    [
        (['{"index": 0, "response": "CWE-79"}', "{not json"], ("line 2", "malformed")),
        (['{"index": 0, "response": "CWE-79"}', '{"index": 0, "response": "CWE-89"}'], ("line 2", "duplicates index 0")),
        (['{"index": 99, "response": "CWE-79"}'], ("index 99 is out of range", "0..3")),
        (['{"index": -1, "response": "CWE-79"}'], ("line 1", "non-negative")),
        (['{"response": "CWE-79"}'], ("line 1", "index")),
        ([], ("is empty",)),
    ],
)
def test_score_rejects_bad_response_files(tmp_path, env, lines, fragments):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    assert_user_error(cli("score", "cti-rcm", "--responses", str(path), env=env), *fragments)


def test_eval_rejects_bad_arguments_before_writing_anything(tmp_path, env):
    out = tmp_path / "run"
    assert_user_error(cli("eval", "--model", "embedded", "--tasks", "cti-xyz", "--out", str(out), env=env), "unknown task 'cti-xyz'")
    assert_user_error(cli("eval", "--model", str(tmp_path / "nope"), "--tasks", "cti-mcq", "--out", str(out), env=env), "unknown model")
    assert_user_error(cli("eval", "--tasks", "cti-ate", "--protocol", "cisco", "--out", str(out), env=env), "cti-ate has no 'cisco' protocol")
    assert_user_error(cli("eval", "--tasks", "cti-mcq", "--protocol", "faith", "--out", str(out), env=env), "unknown protocol")
    assert_user_error(cli("eval", "--tasks", "cti-mcq", "--mode", "vibes", "--out", str(out), env=env), "unknown mode")
    assert_user_error(cli("eval", "--tasks", "cti-taa:0", "--out", str(out), env=env), "bad task limit")
    garbage = tmp_path / "broken.gguf"
    garbage.write_bytes(b"GGUF" + os.urandom(64))
    assert_user_error(cli("eval", "--model", str(garbage), "--tasks", "cti-mcq", "--out", str(out), env=env), "llama.cpp cannot load")
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 this is a zip")
    assert_user_error(cli("eval", "--model", str(not_gguf), "--tasks", "cti-mcq", "--out", str(out), env=env), "not a GGUF file")
    assert not out.exists()


def test_eval_without_data_names_the_missing_file(tmp_path):
    env = {"CYBERSECQWEN_DATA_DIR": "", "CYBERSECQWEN_CACHE_DIR": str(tmp_path / "empty-cache")}
    assert_user_error(cli("eval", "--tasks", "cti-mcq", "--out", str(tmp_path / "run"), env=env),
                      "missing data file cti-bench/cti-mcq.tsv", "--download")


def test_usage_errors_exit_2():
    result = cli("eval", "--limit", "many")
    assert result.returncode == 2 and "Traceback" not in result.stderr
