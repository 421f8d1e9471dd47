"""Presets of the Create and Train tabs: the values of a form saved as a JSON file, ``<folder>/<kind>/<name>.json``.

A preset holds ``{"hypernet_ext_preset": 1, "kind": ..., "values": {option: value}}``. Loading ignores options
this version does not know (it says which) and leaves options the preset lacks as they are. Names go through
fileio.check_name, so a preset never lands outside its folder; an existing preset is replaced only when asked.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Tuple

from ..errors import ConfigError
from ..fileio import atomic_path, check_name, child

logger = logging.getLogger(__name__)

FORMAT = 1


def preset_names(folder, kind: str) -> List[str]:
    """Names of the saved presets of ``kind`` (create, train), sorted."""
    where = Path(folder) / kind
    return sorted(p.stem for p in where.glob("*.json")) if where.is_dir() else []


def save_preset(folder, kind: str, name: str, values: Dict[str, Any], overwrite: bool = False) -> Path:
    """Write ``values`` as preset ``name``; FileExistsError when it exists and ``overwrite`` is not set."""
    name = check_name(str(name or "").strip(), "preset name")
    where = Path(folder) / kind
    where.mkdir(parents=True, exist_ok=True)
    path = child(where, f"{name}.json", "preset name")
    if path.exists() and not overwrite:
        raise FileExistsError(f"preset name: {path} already exists; tick 'replace' to overwrite it or choose another "
                              "name")
    text = json.dumps({"hypernet_ext_preset": FORMAT, "kind": kind, "values": values}, indent=2, sort_keys=True)
    with atomic_path(path) as temporary:
        temporary.write_text(text + "\n", encoding="utf-8")
    return path


def load_preset(folder, kind: str, name: str, known) -> Tuple[Dict[str, Any], List[str]]:
    """(values of the options in ``known``, names of the options the preset has that are not known)."""
    name = check_name(str(name or "").strip(), "preset")
    path = child(Path(folder) / kind, f"{name}.json", "preset")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"preset: {path} does not exist; refresh the list") from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"preset: {path} is not a preset file ({err})") from None
    values = data.get("values") if isinstance(data, dict) else None
    if not isinstance(values, dict) or data.get("kind", kind) != kind:
        raise ConfigError(f"preset: {path} is not a {kind} preset of hypernet_ext")
    known = set(known)
    return {k: v for k, v in values.items() if k in known}, sorted(k for k in values if k not in known)
