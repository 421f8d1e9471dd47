"""``build_tabs``: the Create, Train and Compare tabs inside the caller's gr.Tabs (webui's Train tab, or a plain
gr.Blocks), wired together: a network created in Create is selected in Train and Compare. ``STYLE`` is the
stylesheet (webui loads it by itself; a plain gr.Blocks takes it as ``css``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from . import form, train_events
from .compare_tab import build_compare_tab
from .create_tab import build_create_tab
from .train_tab import build_train_tab

ROOT = Path(__file__).resolve().parent.parent.parent
STYLE = ROOT / "style.css"
SCRIPT = ROOT / "javascript" / "hypernet_ext.js"


def build_tabs(backend, txt2img: Optional[list] = None):
    """Build the three tabs for ``backend`` (ui.backend.Backend); ``txt2img``: webui's txt2img_preview_params
    (prompt, negative prompt, steps, sampler, CFG scale, seed, width, height) when the host has them. Returns the
    Train tab's components (tests reach into them)."""
    from gradio.context import Context

    parent = Context.block   # the caller's gr.Tabs
    before = len(parent.children) if parent is not None else 0
    connect_create = build_create_tab(backend)
    train = build_train_tab(backend, txt2img)
    compare_network = build_compare_tab(backend, txt2img)
    for tab in (parent.children[before:] if parent is not None else []):
        form.scope(tab, tab.elem_id[:-len("_tab")])   # hypernet_ext_create_tab -> hypernet_ext_create
    train_events.connect(backend, train)
    connect_create([train.network, compare_network])
    return train


def style() -> str:
    """Our stylesheet's text (empty when the file is missing)."""
    return STYLE.read_text(encoding="utf-8") if STYLE.is_file() else ""
