import hashlib

import pytest

from cybersecqwen import datafiles
from cybersecqwen.errors import CybersecqwenError


def test_missing_file_names_the_file_and_the_three_ways(tmp_path, monkeypatch):
    monkeypatch.delenv("CYBERSECQWEN_DATA_DIR", raising=False)
    monkeypatch.setenv("CYBERSECQWEN_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(CybersecqwenError) as error:
        datafiles.resolve("cti-bench", "cti-mcq.tsv")
    message = str(error.value)
    assert "cti-bench/cti-mcq.tsv" in message
    assert "--data-dir" in message and "CYBERSECQWEN_DATA_DIR" in message and "--download" in message


def test_mirror_file_that_is_not_pinned_is_refused_unless_allowed(fixture_mirror, monkeypatch):
    monkeypatch.delenv("CYBERSECQWEN_ALLOW_UNPINNED")
    with pytest.raises(CybersecqwenError, match="not the pinned version"):
        datafiles.resolve("cti-bench", "cti-mcq.tsv", fixture_mirror)
    monkeypatch.setenv("CYBERSECQWEN_ALLOW_UNPINNED", "1")
    assert datafiles.resolve("cti-bench", "cti-mcq.tsv", fixture_mirror) == fixture_mirror / "cti-bench" / "cti-mcq.tsv"


def test_real_mirror_files_are_the_pinned_versions(mirror):
    for source in datafiles.SOURCES.values():
        for source_file in source.files:
            path = datafiles.resolve(source.name, source_file.name, mirror)
            assert datafiles.is_pinned(path, source_file), path


def test_cache_is_used_after_the_mirror(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CYBERSECQWEN_CACHE_DIR", str(cache))
    monkeypatch.delenv("CYBERSECQWEN_DATA_DIR", raising=False)
    monkeypatch.setenv("CYBERSECQWEN_ALLOW_UNPINNED", "1")
    target = cache / "cti-bench" / "cti-rcm.tsv"
    target.parent.mkdir(parents=True)
    target.write_text("URL\tDescription\tPrompt\tGT\n")
    assert datafiles.resolve("cti-bench", "cti-rcm.tsv") == target


def test_download_only_with_the_flag_and_checked_against_sha256(tmp_path, monkeypatch):
    payload = b'[{"text": "x", "label": "T1059", "doc_title": "d"}]'
    upstream = tmp_path / "upstream.json"
    upstream.write_bytes(payload)
    pinned = datafiles.SourceFile("single_label.json", hashlib.sha256(payload).hexdigest(), len(payload), upstream.as_uri())
    source = datafiles.Source("tram-attack-sentences", "t", "Apache-2.0", "o", (pinned,))
    monkeypatch.setitem(datafiles.SOURCES, "tram-attack-sentences", source)
    monkeypatch.setenv("CYBERSECQWEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CYBERSECQWEN_DATA_DIR", raising=False)
    with pytest.raises(CybersecqwenError, match="--download"):
        datafiles.resolve("tram-attack-sentences", "single_label.json")
    path = datafiles.resolve("tram-attack-sentences", "single_label.json", download=True)
    assert path.read_bytes() == payload
    # An upstream that changed is refused and nothing lands in the cache.
    path.unlink()
    upstream.write_bytes(payload + b" ")
    with pytest.raises(CybersecqwenError, match="upstream changed"):
        datafiles.resolve("tram-attack-sentences", "single_label.json", download=True)
    assert not path.exists() and not list(path.parent.glob(".*tmp"))


def test_unknown_source_and_file():
    with pytest.raises(CybersecqwenError, match="unknown data source"):
        datafiles.get_source("nvd")
    with pytest.raises(CybersecqwenError, match="has no file"):
        datafiles.get_source("cti-bench").file("cti-xyz.tsv")
