"""The Compare tab: choose a network and its snapshots, seeds or strengths as columns, one prompt and its
settings (copied from txt2img when the host has it); render the grid (hypernet_ext.ui.compare), which is saved
as a PNG; clicking a picture of the grid shows it large with its infotext.
"""
from __future__ import annotations

import logging

from ..errors import HypernetError
from . import form
from .backend import RenderSettings
from .compare import BASE, compare, row_choices
from .views import message_html

logger = logging.getLogger(__name__)

ID = form.PREFIX + "compare_"
DEFAULTS = RenderSettings(prompt="")
COLUMN_EXAMPLES = {"seeds": "1, 2", "strengths": "0.5, 1"}


def build_compare_tab(backend, txt2img=None):
    """The tab's blocks (inside a gr.Tabs); ``txt2img``: webui's eight txt2img_preview_params, when there are.
    Returns the network dropdown (the Create tab selects new networks in it)."""
    import gradio as gr

    with gr.Tab("Hypernet: Compare", id=ID + "tab", elem_id=ID + "tab"):
        with gr.Row():
            network = gr.Dropdown(label="Network", choices=backend.network_names(), elem_id=ID + "network")
            refresh = form.refresh_button(ID + "network_refresh")
        rows = gr.CheckboxGroup(label="Snapshots (rows)", choices=[], elem_id=ID + "rows")
        base = gr.Checkbox(label="Also a row without the network", value=True, elem_id=ID + "base")
        with gr.Row():
            mode = gr.Radio(label="Columns", choices=list(COLUMN_EXAMPLES), value="seeds", elem_id=ID + "mode")
            columns = gr.Textbox(label="Seeds or strengths (comma-separated)", value=COLUMN_EXAMPLES["seeds"],
                                 elem_id=ID + "columns")
            strength = gr.Number(label="Strength (with seeds as columns)", value=1.0, elem_id=ID + "strength")
            seed = gr.Number(label="Seed (with strengths as columns)", value=DEFAULTS.seed, precision=0,
                             elem_id=ID + "seed")
        prompt = gr.Textbox(label="Prompt", lines=2, elem_id=ID + "prompt")
        negative = gr.Textbox(label="Negative prompt", lines=1, elem_id=ID + "negative")
        with gr.Row():
            steps = gr.Number(label="Sampling steps", value=DEFAULTS.steps, precision=0, elem_id=ID + "steps")
            sampler = gr.Dropdown(label="Sampler", choices=[""] + list(backend.sampler_names()), value="",
                                  allow_custom_value=True, elem_id=ID + "sampler")
            cfg = gr.Number(label="CFG scale", value=DEFAULTS.cfg_scale, elem_id=ID + "cfg")
            width = gr.Number(label="Width", value=DEFAULTS.width, precision=0, elem_id=ID + "width")
            height = gr.Number(label="Height", value=DEFAULTS.height, precision=0, elem_id=ID + "height")
        with gr.Row():
            if txt2img:
                copy = gr.Button("Copy prompt and settings from txt2img", elem_id=ID + "copy_txt2img")
            render = gr.Button("Render the grid", variant="primary", elem_id=ID + "render")
        result = gr.HTML(elem_id=ID + "result")
        grid = gr.Image(label="Grid", type="pil", interactive=False, elem_id=ID + "grid")
        cells = gr.Gallery(label="Pictures (click one)", columns=2, elem_id=ID + "cells")
        with gr.Row():
            picked = gr.Image(label="Picture", type="pil", interactive=False, elem_id=ID + "picked")
            info = gr.Textbox(label="Infotext", lines=6, interactive=False, elem_id=ID + "info")
        state = gr.State([])
    settings = [prompt, negative, steps, sampler, cfg, seed, width, height]   # txt2img_preview_params' order

    def snapshots(name):
        names, picked_rows = row_choices(backend, name)
        return gr.update(choices=names, value=picked_rows)

    def show(cells_state, evt):
        if not cells_state or evt.index is None or evt.index >= len(cells_state):
            return gr.update(), gr.update()
        image, text, caption = cells_state[evt.index]
        return gr.update(value=image, label=f"Picture: {caption}"), text

    show.__annotations__["evt"] = gr.SelectData   # gradio passes the clicked cell to the argument of this type

    network.change(snapshots, inputs=[network], outputs=[rows])
    refresh.click(lambda name: (gr.update(choices=backend.network_names()), snapshots(name)), inputs=[network],
                  outputs=[network, rows])
    if txt2img:
        copy.click(lambda *values: values, inputs=list(txt2img), outputs=settings)
    render.click(lambda *values: render_grid(backend, *values),
                 inputs=[network, rows, base, mode, columns, strength] + settings, outputs=[result, grid, cells, state])
    mode.change(lambda m: COLUMN_EXAMPLES[m], inputs=[mode], outputs=[columns])
    cells.select(show, inputs=[state], outputs=[picked, info])
    return network


def render_grid(backend, name, chosen, with_base, mode_value, columns_value, strength_value, *values):
    """Render button: (result HTML, grid, gallery update, cells state: (image, infotext, caption) per picture)."""
    import gradio as gr

    prompt_v, negative_v, steps_v, sampler_v, cfg_v, seed_v, width_v, height_v = values
    chosen_rows = ([BASE] if with_base else []) + list(chosen or [])
    try:
        if not name:
            raise HypernetError("network: choose the network whose snapshots to compare")
        render_settings = RenderSettings(str(prompt_v or ""), str(negative_v or ""), int(steps_v or 1),
                                         str(sampler_v or ""), float(cfg_v or 0), int(seed_v or 0),
                                         int(width_v or 8), int(height_v or 8))
        done = compare(backend, name, chosen_rows, mode_value, columns_value, render_settings,
                       float(strength_value if strength_value is not None else 1.0))
    except HypernetError as err:
        return message_html(str(err)), gr.update(), gr.update(), gr.update()
    except Exception as err:   # noqa: BLE001 - shown in the tab, the trace goes to the console
        logger.exception("hypernet_ext: rendering the comparison failed")
        return (message_html(f"rendering failed: {type(err).__name__}: {err} (see the console)"),
                gr.update(), gr.update(), gr.update())
    gallery = [(c.image, f"{c.row} · {c.column}") for c in done.cells]
    return (message_html(f"Saved {done.path} ({len(done.rows)} rows x {len(done.columns)} columns)", "ok"),
            done.grid, gr.update(value=gallery, columns=len(done.columns)),
            [(c.image, c.info, f"{c.row} · {c.column}") for c in done.cells])
