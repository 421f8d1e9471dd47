"""Captions and prompts: the caption of an image (sidecar .txt or file name, webui's rules), prompt templates
(shipped ones under ``templates/`` or a user's file), and the prompt of one sample with [name] / [filewords]
filled in after tag shuffle and tag dropout.
"""
from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import List, Optional

from ..errors import DataError

log = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
DEFAULT_TEMPLATE = "hypernetwork"
# webui strips any run of digits and dashes at the start of a file name ("00012-a cat" -> "a cat")
_LEADING_NUMBER = re.compile(r"^[-\d]+\s*")
# webui v1.10.1's dataset_filename_word_regex and dataset_filename_join_string defaults: the whole name, as is
DEFAULT_WORD_REGEX = ""
DEFAULT_JOIN = " "


def shipped_templates() -> List[str]:
    """Names of the templates that come with the extension (without .txt), sorted."""
    return sorted(p.stem for p in TEMPLATE_DIR.glob("*.txt"))


def template_path(spec: str) -> Path:
    """The file a template setting names: a bare name (``style`` or ``style.txt``) is a shipped template when
    one has that name; anything else is a file path."""
    spec = str(spec).strip()
    stem = spec[:-4] if spec.lower().endswith(".txt") else spec
    if "/" not in stem and os.sep not in stem and (TEMPLATE_DIR / f"{stem}.txt").is_file():
        return TEMPLATE_DIR / f"{stem}.txt"
    candidate = Path(spec).expanduser()
    if candidate.is_file():
        return candidate
    raise DataError(f"template: {spec!r} is neither a file nor a shipped template; shipped templates are "
                    f"{', '.join(shipped_templates())}")


def load_template(spec: str) -> List[str]:
    """The prompt lines of a template (blank lines left out). DataError when there are none."""
    path = template_path(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"template: cannot read {path}: {e}") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise DataError(f"template: {path} has no prompt lines; write one prompt per line, with [name] and/or "
                        "[filewords] where the name and the caption go")
    return lines


def caption_from_name(stem: str, word_regex: str = DEFAULT_WORD_REGEX, join: str = DEFAULT_JOIN) -> str:
    """webui's caption for an image without a .txt: drop a leading number/dash run, then, when a regex is
    set, join what it finds (re.findall: its groups when it has some); with none, the rest of the name as is,
    commas included, so tag shuffle and dropout can split it."""
    text = _LEADING_NUMBER.sub("", stem)
    if word_regex:
        text = (join or "").join(re.findall(word_regex, text))
    return text


def read_caption(image_path, word_regex: str = DEFAULT_WORD_REGEX, join: str = DEFAULT_JOIN) -> str:
    """The caption of an image: its sidecar ``<stem>.txt`` when there is one (whitespace at the ends and line
    breaks tidied), else the file name through caption_from_name."""
    image_path = Path(image_path)
    sidecar = image_path.with_suffix(".txt")
    if sidecar.is_file():
        try:
            text = sidecar.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{sidecar}: cannot read the caption file ({e}); save it as UTF-8 text") from None
        return " ".join(line.strip() for line in text.splitlines() if line.strip())
    return caption_from_name(image_path.stem, word_regex, join)


def split_tags(caption: str) -> List[str]:
    """The comma-separated tags of a caption, stripped, empty ones left out."""
    return [t.strip() for t in caption.split(",") if t.strip()]


def file_words(caption: str, shuffle: bool, dropout: float, rng: random.Random) -> str:
    """What replaces [filewords]: the caption as is, or, with tag shuffle or dropout, its tags with each one
    dropped with probability ``dropout`` and the rest shuffled, joined by ', '."""
    if not shuffle and dropout <= 0:
        return caption
    tags = split_tags(caption)
    if dropout > 0:
        tags = [t for t in tags if rng.random() >= dropout]
    if shuffle:
        rng.shuffle(tags)
    return ", ".join(tags)


def make_prompt(lines: List[str], name: str, caption: str, shuffle: bool, dropout: float,
                rng: random.Random, line: Optional[int] = None) -> str:
    """One sample's prompt: a template line drawn from ``rng`` (or line number ``line``), with [name] and
    [filewords] filled in."""
    text = lines[rng.randrange(len(lines)) if line is None else line]
    if "[filewords]" in text:
        text = text.replace("[filewords]", file_words(caption, shuffle, dropout, rng))
    return text.replace("[name]", name)
