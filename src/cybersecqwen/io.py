"""Atomic file writing: a reader never sees half an artifact, a crash never leaves one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside `path`; when the block succeeds it replaces `path` (any previous folder
    there is removed first), otherwise it is removed: a reader sees the old folder or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield staging
        if path.exists():
            shutil.rmtree(path)
        os.replace(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


@contextlib.contextmanager
def png_figure(path: Path, dpi: int = 110, **subplots: Any) -> Iterator[tuple[Any, Any]]:
    """(figure, axes) of a headless matplotlib figure, laid out and written atomically to `path` as the block ends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(**subplots)
    try:
        yield fig, axes
        fig.tight_layout()
        with atomic_path(path) as tmp:  # no software tag: the same data draws the same bytes
            fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
    finally:
        plt.close(fig)


def require_free_space(folder: Path, needed: int, hint: str = "") -> None:
    """Refuse, before any work, to start writing what would not fit (creates `folder` to measure it)."""
    import shutil

    from cybersecqwen.errors import CybersecqwenError

    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise CybersecqwenError(f"not enough disk at {folder}: {free / 1e9:.1f} GB free, about {needed / 1e9:.1f} GB needed"
                                + (f"; {hint}" if hint else ""))


def read_yaml(path: Path, what: str) -> Any:
    """A YAML file a user wrote (recipe, references); a missing or broken one is a user error."""
    import yaml

    from cybersecqwen.errors import CybersecqwenError

    if not path.is_file():
        raise CybersecqwenError(f"{what} {path} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CybersecqwenError(f"{what} {path} is not valid YAML: {exc}") from None


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, payload: Any) -> None:
    write_text(path, json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=False) + "\n")
