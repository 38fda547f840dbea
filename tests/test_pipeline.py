"""`cybersecqwen run` resumes a stage that was stopped after its corpus was written (no rebuild, no refusal)."""

from __future__ import annotations

import json

from cybersecqwen.pipeline import Pipeline
from tests.corpus.conftest import source_mirror  # noqa: F401
from tests.e2e.test_run import recipe


def test_a_stage_stopped_after_writing_its_corpus_resumes_with_it(source_mirror, tmp_path):
    out = tmp_path / "run"
    Pipeline(recipe(tmp_path), out, source_mirror).run(until="data", progress=lambda line: None)
    manifest = out / "corpus" / "manifest.json"
    written = manifest.stat().st_mtime_ns
    # as if the process had been killed between the corpus' rename and the stage's "finished" record
    state = json.loads((out / "pipeline.json").read_text())
    state["stages"]["data"]["finished"] = False
    (out / "pipeline.json").write_text(json.dumps(state))
    lines: list[str] = []
    done = Pipeline(recipe(tmp_path), out, source_mirror).run(until="data", progress=lines.append)
    assert done == {"data": "ran"} and lines == ["[data] resuming"]
    assert manifest.stat().st_mtime_ns == written  # the same corpus, not rebuilt
    assert json.loads((out / "pipeline.json").read_text())["stages"]["data"]["finished"]
