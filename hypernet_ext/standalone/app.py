"""The standalone app: the Create, Train and Compare tabs in a plain gr.Blocks on the tiny built-in model
(``python -m hypernet_ext app``), with a captioned demo data set ready in ``<out>/data``. The browser tests build
the same app.
"""
from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def build_app(backend):
    """A gr.Blocks with the three tabs for ``backend`` (its queue on: the Train tab follows jobs with a
    generator, and Interrupt must get through while one runs). Returns (blocks, the Train tab's components)."""
    import gradio as gr

    from ..ui.tabs import build_tabs, style

    with gr.Blocks(title="hypernet_ext", css=style(), analytics_enabled=False) as blocks:
        with gr.Tabs(elem_id="hypernet_ext_tabs"):
            train = build_tabs(backend)
    blocks.queue(concurrency_count=4)
    return blocks, train


def demo_data(folder) -> Path:
    """``<folder>/data``: eight captioned pictures of shapes (written once)."""
    from .demo import make_shapes_dataset

    data = Path(folder) / "data"
    if not data.is_dir():
        make_shapes_dataset(data, count=8, seed=0)
    return data


def run_app(out, host: str = "127.0.0.1", port: int = 7870) -> None:
    """Serve the app until interrupted."""
    from .backend import TINY_DEFAULTS, StandaloneBackend

    data = demo_data(out)
    backend = StandaloneBackend(out, defaults=dict(TINY_DEFAULTS, data_dir=str(data)))
    blocks, _ = build_app(backend)
    logger.info("networks in %s, a demo data set in %s", Path(out) / "hypernetworks", data)
    blocks.launch(server_name=host, server_port=port, show_api=False)
