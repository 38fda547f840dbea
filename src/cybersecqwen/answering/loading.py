"""From options to a working answerer: the backend, the catalogs, the heads and the knowledge index, checked against
each other, then the service. Used by `serve`, `analyze`, `enrich` and `heads fuse` alike."""

from __future__ import annotations

import logging
from pathlib import Path

from cybersecqwen.errors import CybersecqwenError


def check_heads(folder: Path, data_dir: Path | None, download: bool) -> None:
    from cybersecqwen.answering.catalog import load_catalogs
    from cybersecqwen.heads import load_heads

    unknown = foreign_cwes(load_heads(folder), load_catalogs(data_dir, download))
    if unknown:
        raise CybersecqwenError(f"they answer CWE ids outside this catalog ({', '.join(unknown[:5])})")


def foreign_cwes(heads, catalogs) -> list[str]:
    """The CWE ids these heads answer that the catalog does not hold (heads trained against another CWE version)."""
    return sorted(set(heads.models["cwe"].labels) - set(catalogs.cwe)) if heads.has("cwe") else []


def model_identity(model: str) -> str:
    """What fusion weights are tied to: `embedded`, an openai: URL, or a model file or folder's absolute path."""
    return model if model == "embedded" or model.startswith("openai:") else str(Path(model).expanduser().resolve())


def load_service(backend, data_dir: Path | None, download: bool, chat_only: bool, heads: Path | None = None,
                 model: str = "embedded"):
    if chat_only:
        return None
    from cybersecqwen.answering.catalog import load_catalogs
    from cybersecqwen.answering.service import CtiService

    loaded_heads = None
    if heads is not None:
        from cybersecqwen.heads import load_heads

        loaded_heads = load_heads(heads)
    try:
        catalogs = load_catalogs(data_dir, download)
    except CybersecqwenError as exc:
        raise CybersecqwenError(f"the structured endpoints need the CWE and ATT&CK catalogs: {exc} (or pass --chat-only)") from None
    if loaded_heads is not None:
        unknown = foreign_cwes(loaded_heads, catalogs)
        if unknown:
            raise CybersecqwenError(f"the heads in {heads} answer CWE ids outside this catalog ({', '.join(unknown[:5])}); "
                                    "retrain them against the same CWE version")
    from cybersecqwen.answering.references import warninglists
    from cybersecqwen.answering.service import Fusion

    warninglists()  # loaded at start (0.6 s), not in a client's first request
    fusion = None
    unavailable = backend.scoring_unavailable() if backend is not None else None
    if unavailable:  # said once, here: the structured endpoints then fuse without the model
        if loaded_heads is None:
            raise CybersecqwenError(f"the structured endpoints need candidate scores and {model} cannot give them: {unavailable}; "
                                    "pass --heads DIR (or --chat-only)")
        logging.getLogger(__name__).warning("the structured endpoints answer without the model: %s", unavailable)
        fusion = Fusion.load(loaded_heads, None, model_identity(model))
        fusion.source += f" (the model cannot score candidates: {unavailable})"
    return CtiService(backend, catalogs, loaded_heads, fusion=fusion, model_label=model_identity(model),
                      knowledge=knowledge_index(data_dir, download))


def knowledge_index(data_dir: Path | None, download: bool):
    """The catalogs as citable passages for grounded Q&A (heads/knowledge.py); None, logged, where a source is missing."""
    from cybersecqwen.datafiles import MissingDataError
    from cybersecqwen.heads.knowledge import KnowledgeIndex

    try:
        return KnowledgeIndex.load(data_dir, download)
    except MissingDataError as exc:
        logging.getLogger(__name__).warning("no knowledge index (grounded Q&A answers from the model): %s", exc)
        return None


def serving_backend(model: str, backend_kind: str, no_model: bool = False):
    from cybersecqwen.models import load_backend

    if no_model:
        return None
    if model == "embedded" and backend_kind == "auto":
        backend_kind = "llamacpp"  # the shipped GGUF: single-stream speed is what a server needs (NOTES.md)
    return load_backend(model, backend_kind, batch_size=1)
