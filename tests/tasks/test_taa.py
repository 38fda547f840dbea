import pytest

from cybersecqwen.tasks import get_task
from cybersecqwen.tasks.base import Answer
from cybersecqwen.tasks.taa import ActorGraph


def test_official_connection_rules_and_the_kept_quirk():
    graph = ActorGraph({"apt28": ["fancy bear"], "fancy bear": ["sofacy"]}, {"sidecopy": ["transparent tribe"]})
    assert graph.connection("APT28", "Sofacy") == "C"  # alias chain, symmetric and transitive
    assert graph.connection("sofacy", "apt28") == "C"
    assert graph.connection("SideCopy", "transparent tribe") == "P"  # related group
    assert graph.connection("apt28", "lazarus") == "I"
    # The release's search never visits the start itself: an alias-less exact match is not "correct".
    assert graph.connection("sidecopy", "sidecopy") == "P"
    assert graph.connection("unknown group", "unknown group") == "I"


def test_gazetteer_extraction_and_scores(fixture_mirror):
    taa = get_task("cti-taa")
    items = taa.load(fixture_mirror)
    assert [i.gold for i in items] == ["APT28", "SideCopy", "Lazarus"]
    responses = [
        "The report points to Fancy Bear given the spearphishing.",
        "Threat Actor: SideCopy",
        "Based on the TTPs this is unclear.",
    ]
    answers = [taa.extract(r, "ctibench") for r in responses]
    assert [a.value for a in answers] == ["fancy bear", "sidecopy", None]
    rows = [taa.stats(i, a) for i, a in zip(items, answers)]
    totals = {k: sum(r[k] for r in rows) for k in rows[0]}
    official = taa.metrics(totals, "ctibench")
    assert official["correct_accuracy"] == pytest.approx(1 / 3)
    assert official["plausible_accuracy"] == pytest.approx(2 / 3)  # SideCopy only via its related group
    robust = taa.metrics(totals, "robust")
    assert robust["correct_accuracy"] == pytest.approx(2 / 3)  # the exact match counts


def test_robust_prefers_the_conclusion_over_names_quoted_from_the_report(fixture_mirror):
    taa = get_task("cti-taa")
    taa.load(fixture_mirror)
    text = "The report mentions Transparent Tribe as a parent group.\n\nAttribution: the actor is most likely Lazarus."
    assert taa.extract(text, "ctibench") == Answer("transparent tribe", "proper")
    assert taa.extract(text, "robust") == Answer("lazarus", "proper")


def test_real_data_gold_and_gazetteer(mirror):
    taa = get_task("cti-taa")
    items = taa.load(mirror)
    assert len(items) == 50
    assert taa.gazetteer.size > 1000  # official dictionaries + ATT&CK intrusion sets + MISP
    assert taa.extract("This is the work of Cozy Bear.", "ctibench").value == "cozy bear"


def test_the_releases_nan_node_links_groups_under_ctibench_rules_only(tmp_path, fixture_mirror):
    import json

    bench = fixture_mirror / "cti-bench"
    # As in the release: "nan" (an empty spreadsheet cell) is listed as an alias of two groups and related to a third.
    (bench / "taa-alias-dict.json").write_text(json.dumps({"patchwork": ["nan"], "bitter apt": ["nan"], "lazarus": ["hidden cobra"]}))
    (bench / "taa-related-dict.json").write_text(json.dumps({"sidecopy": ["nan"]}))
    (bench / "cti-taa-gt.tsv").write_text("GT\nPatchwork\nSideCopy\nLazarus\n")
    taa = get_task("cti-taa")
    items = taa.load(fixture_mirror)
    answers = [Answer("bitter apt", "proper"), Answer("patchwork", "proper"), Answer("hidden cobra", "proper")]
    rows = [taa.stats(i, a) for i, a in zip(items, answers)]
    totals = {k: sum(r[k] for r in rows) for k in rows[0]}
    official, robust = taa.metrics(totals, "ctibench"), taa.metrics(totals, "robust")
    # ctibench: Bitter APT is an "alias" of Patchwork through nan; SideCopy reaches Patchwork through nan too.
    assert (official["correct_accuracy"], official["plausible_accuracy"]) == (pytest.approx(2 / 3), pytest.approx(1.0))
    # robust: nan is no group, only the real alias counts.
    assert (robust["correct_accuracy"], robust["plausible_accuracy"]) == (pytest.approx(1 / 3), pytest.approx(1 / 3))
    assert taa.extract("the actor is nan", "ctibench").valid is False  # nan is never an extracted name
