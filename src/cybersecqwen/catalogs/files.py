"""Reading the raw files of the catalogs: JSON (plain or gzipped) and STIX bundles. Malformed input names the file and position."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from cybersecqwen.errors import CybersecqwenError


def load_json(path: Path) -> Any:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                return json.load(handle)
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CybersecqwenError(f"{path} is malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise CybersecqwenError(f"{path} cannot be read: {exc}") from None


def stix_objects(path: Path) -> list[dict[str, Any]]:
    bundle = load_json(path)
    if not isinstance(bundle, dict) or bundle.get("type") != "bundle" or not isinstance(bundle.get("objects"), list):
        raise CybersecqwenError(f"{path} is not a STIX bundle (expected a JSON object with type 'bundle' and 'objects')")
    return bundle["objects"]


def external_id(obj: dict[str, Any], source_name: str) -> str | None:
    for reference in obj.get("external_references", []):
        if reference.get("source_name") == source_name and reference.get("external_id"):
            return reference["external_id"]
    return None


def is_active(obj: dict[str, Any]) -> bool:
    return not obj.get("revoked", False) and not obj.get("x_mitre_deprecated", False)
