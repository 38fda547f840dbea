"""datacard.md and datacard.png: what is in a corpus, where it came from, what was dropped and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def corpus_stats(corpus: Path) -> str:
    """The `data stats` verb: the datacard of a built corpus, from its manifest."""
    import json

    from cybersecqwen.errors import CybersecqwenError

    manifest_path = corpus / "manifest.json"
    if not manifest_path.is_file():
        raise CybersecqwenError(f"{corpus} is not a corpus folder (no manifest.json); build one with `cybersecqwen data build`")
    return render_datacard(json.loads(manifest_path.read_text(encoding="utf-8")))


def render_datacard(manifest: dict[str, Any]) -> str:
    lines = [f"# Corpus datacard: {manifest['recipe']}", "",
             f"Seed {manifest['seed']}; lengths measured with the tokenizer of `{manifest['tokenizer']}`.", "",
             f"CVE data protocol: **{manifest.get('cve_protocol', 'not recorded')}** (a model trained on this corpus is "
             "measured under it); CWE answers: "
             f"{'mapped into view 1003 where the catalog relates them (source labels kept as source_label)' if manifest.get('cwe_labels') == 'view-1003' else 'as the sources give them'}.", "",
             "## Sources", "", "| source | file | license | pinned | origin |", "|---|---|---|---|---|"]
    for name, source in manifest["sources"].items():
        lines.append(f"| {name} | {source['file']} | {source['license']} | {'yes' if source['pinned'] else 'NO'} | {source['origin']} |")
    lines += ["", "## Examples", "", "| split | total | by task | by source |", "|---|---|---|---|"]
    for split_name, counts in manifest["counts"].items():
        by_task = ", ".join(f"{k} {v}" for k, v in counts["by_task"].items())
        by_source = ", ".join(f"{k} {v}" for k, v in counts["by_source"].items())
        lines.append(f"| {split_name} | {counts['total']} | {by_task} | {by_source} |")
    tokens = manifest["tokens"]
    lines += ["", f"Tokens (train+val): {tokens.get('total', 0)} in all, mean {tokens.get('mean')}, median "
              f"{tokens.get('median')}, p95 {tokens.get('p95')}, max {tokens.get('max')}.", "",
              "## Dropped", "", "| source | reason | examples |", "|---|---|---|"]
    for source, reasons in manifest["dropped"].items():
        for reason, count in reasons.items():
            lines.append(f"| {source} | {reason} | {count} |")
    lines += ["", "## Decontamination (examples dropped, by CTI-Bench split they overlapped)", "",
              "| source | split | examples |", "|---|---|---|"]
    for source, splits in manifest["contaminated_by_split"].items():
        for split_name, count in splits.items():
            lines.append(f"| {source} | {split_name} | {count} |")
    lines += ["", "Rule: 13-gram share ≥ 0.9 or 5-gram word coverage ≥ 0.9 of an item's own text, a short item "
              "appearing whole, an RCM/VSP item's CVE id, or an item's own URL (see corpus/decontam.py).", ""]
    return "\n".join(lines)


def render_plot(manifest: dict[str, Any], lengths: list[int], path: Path) -> None:
    from cybersecqwen.io import png_figure

    with png_figure(path, dpi=100, ncols=2, figsize=(10, 3.6)) as (fig, (mix_ax, length_ax)):
        by_task = manifest["counts"]["train"]["by_task"]
        mix_ax.bar(list(by_task), list(by_task.values()), color="#4472c4")
        mix_ax.set_title("train examples by task", fontsize=10)
        mix_ax.tick_params(axis="x", labelsize=8)
        if lengths:
            length_ax.hist(lengths, bins=40, color="#70ad47")
        length_ax.set_title("example length (tokens)", fontsize=10)
        fig.suptitle(f"corpus {manifest['recipe']}", fontsize=10)
