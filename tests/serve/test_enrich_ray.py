"""Issue 28.2: enrichment on Ray Data gives the single-process path's output, row for row (a local Ray cluster
started by the test on this machine and stopped by it)."""

from __future__ import annotations

import json

import pytest

from cybersecqwen.errors import CybersecqwenError
from tests.heads.conftest import heads_corpus, trained_heads  # noqa: F401 - fixtures
from tests.serve.test_promises import source_mirror  # noqa: F401

RECORDS = [{"id": i, "description": text} for i, text in enumerate(
    ["SQL injection in the login form of Acme Portal lets attackers read the database.",
     "The implant beacons to its C2 server over HTTPS and lists files and directories.",
     "Reflected cross-site scripting in the search page of Widget CMS."] * 10)]


def test_without_ray_the_engine_says_how_to_install_it(monkeypatch):
    import builtins

    from cybersecqwen.answering.enrich_ray import require_ray

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(CybersecqwenError, match=r'pip install "ray\[data\]"'):
        require_ray()


@pytest.mark.slow
def test_ray_enrichment_equals_the_local_path_row_for_row(trained_heads, source_mirror, tmp_path):  # noqa: F811
    pytest.importorskip("ray.data", reason="Ray Data is an optional extra (pip install 'ray[data]')")
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cybersecqwen.answering.enrich import enrich_file
    from cybersecqwen.answering.enrich_ray import enrich_with_ray

    lines = [json.dumps(r) for r in RECORDS] + ["not json", "[1, 2]", json.dumps({"id": "no text"}), ""]
    source = tmp_path / "alerts.jsonl"
    source.write_text("\n".join(lines) + "\n")
    local = tmp_path / "local.jsonl"
    enrich_file("embedded", "auto", source, local, "description", "cwe", None, source_mirror, False, trained_heads, True)
    counts = enrich_with_ray(str(source), str(tmp_path / "ray.jsonl"), "description", "cwe", "embedded", trained_heads, True,
                             source_mirror, False, workers=2)
    assert (tmp_path / "ray.jsonl").read_text() == local.read_text()  # same records, same errors, same order
    assert counts == {"lines": len(lines), "enriched": len(RECORDS), "errors": 4, "workers": 2}
    errors = [json.loads(line)["cybersecqwen"].get("error") for line in local.read_text().splitlines()[-4:]]
    assert errors[0].startswith("not a JSON object") and errors[2] == "no text in field 'description'"

    pq.write_table(pa.Table.from_pylist(RECORDS), tmp_path / "alerts.parquet")  # Parquet in, a folder of Parquet out
    counts = enrich_with_ray(str(tmp_path / "alerts.parquet"), str(tmp_path / "out.parquet"), "description", "attack", "embedded",
                             trained_heads, True, source_mirror, False, workers=1)
    table = pq.read_table(tmp_path / "out.parquet")
    records = [json.loads(value) for value in table.column("record").to_pylist()]
    assert [r["id"] for r in records] == [r["id"] for r in RECORDS] and counts["errors"] == 0
    assert all("techniques" in r["cybersecqwen"] for r in records)
    with pytest.raises(CybersecqwenError, match="a local model would be loaded once per worker"):
        enrich_with_ray(str(source), str(tmp_path / "x.jsonl"), "description", "cwe", "model.gguf", trained_heads, False, source_mirror, False)
