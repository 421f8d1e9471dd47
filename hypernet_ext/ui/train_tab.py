"""The Train tab's layout: the common path on top (network, dataset folder, learning-rate schedule, steps, batch
size; Train, Resume, Interrupt, Check, Find learning rate), what a run shows while it runs (status with step and
ETA, the loss / validation / learning-rate plot, the newest preview and all previews, checkpoints, messages),
then every other training option in accordions, presets last. hypernet_ext.ui.train_events holds what the
buttons do.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..data.config import LATENT_SAMPLING, RESIZE_MODES
from ..optim import available_optimizers
from ..schedules import CLIP_MODES, KINDS
from ..training.config import GUARD_ACTIONS, PRECISIONS
from . import form
from .presets_block import presets_block
from .views import checkpoints_html, status_html

ID = form.PREFIX + "train_"
TXT2IMG = ("preview_prompt", "preview_negative_prompt", "preview_steps", "preview_sampler", "preview_cfg_scale",
           "preview_seed", "preview_width", "preview_height")   # the order of webui's txt2img_preview_params


def choices(backend) -> Dict[str, object]:
    return {"resize": lambda: list(RESIZE_MODES), "latent_sampling": lambda: list(LATENT_SAMPLING),
            "kind": lambda: list(KINDS), "clip_grad_mode": lambda: list(CLIP_MODES),
            "mixed_precision": lambda: list(PRECISIONS), "guard_action": lambda: list(GUARD_ACTIONS),
            "optimizer": available_optimizers, "template": backend.template_names,
            "preview_sampler": lambda: [""] + list(backend.sampler_names())}


@dataclass
class TrainTab:
    """The components the events need."""
    options: list
    fields: list                                  # one component per option, in ``options`` order
    network: object = None
    network_refresh: object = None
    template_refresh: object = None
    buttons: Dict[str, object] = field(default_factory=dict)
    outputs: Dict[str, object] = field(default_factory=dict)
    job_id: object = None
    task_id: object = None
    use_txt2img: object = None
    txt2img: List[object] = field(default_factory=list)
    tab: object = None

    def field_of(self, name: str):
        return self.fields[[o.name for o in self.options].index(name)]


def _network_row(gr, backend, tab: TrainTab) -> None:
    with gr.Row():
        tab.network = gr.Dropdown(label="Network", choices=backend.network_names(), elem_id=ID + "network",
                                  info="The hypernetwork to train (create one in the Create tab).")
        tab.network_refresh = form.refresh_button(ID + "network_refresh")


def _top(gr, backend, tab: TrainTab, by_name) -> None:
    _network_row(gr, backend, tab)
    tab.fields[by_name["data_dir"]] = form.component(tab.options[by_name["data_dir"]], ID + "data_dir")
    with gr.Row():
        for name in form.TOP[1:]:
            tab.fields[by_name[name]] = form.component(tab.options[by_name[name]], ID + name)
    with gr.Row(elem_id=ID + "buttons"):
        for key, text, variant in (("train", "Train", "primary"), ("resume", "Resume", "secondary"),
                                   ("interrupt", "Interrupt", "stop"), ("check", "Check settings", "secondary"),
                                   ("find_lr", "Find learning rate", "secondary")):
            tab.buttons[key] = gr.Button(text, variant=variant, elem_id=f"{ID}{key}")


def _progress(gr, tab: TrainTab) -> None:
    out = tab.outputs
    out["checks"] = gr.HTML(elem_id=ID + "checks")
    out["status"] = gr.HTML(status_html(None), elem_id=ID + "status")
    out["plot"] = gr.Image(label="Loss, validation loss and learning rate", show_label=False, type="pil",
                           interactive=False, elem_id=ID + "plot")   # the chart's panels have titles
    with gr.Row():
        out["preview"] = gr.Image(label="Newest preview", type="filepath", interactive=False, height=320,
                                  elem_id=ID + "preview")
        out["previews"] = gr.Gallery(label="Previews", columns=4, height=320, elem_id=ID + "previews")
    out["checkpoints"] = gr.HTML(checkpoints_html(None), elem_id=ID + "checkpoints")
    out["messages"] = gr.Textbox(label="Messages", lines=4, max_lines=12, interactive=False,
                                 elem_id=ID + "messages")


def _section(gr, title: str, tab: TrainTab, backend) -> None:
    slug = title.lower().replace(" ", "_").replace("-", "_")
    with gr.Accordion(title, open=False, elem_id=f"{ID}section_{slug}") as accordion:
        if title == "Learning-rate range test":
            tab.outputs["lr_accordion"] = accordion
            tab.outputs["lr_status"] = gr.HTML(elem_id=ID + "lr_status")
            tab.outputs["lr_plot"] = gr.Image(label="Loss against the learning rate", type="pil",
                                              interactive=False, elem_id=ID + "lr_plot")
            tab.buttons["lr_apply"] = gr.Button("Use the suggested schedule", elem_id=ID + "lr_apply")
        with gr.Row(elem_classes=["hypernet-ext-grid"]):
            for index, option in enumerate(tab.options):
                if option.section == title:
                    tab.fields[index] = form.component(option, ID + option.name)
                    if option.name == "template":
                        tab.template_refresh = form.refresh_button(ID + "template_refresh")
        if title == "Previews" and tab.txt2img:
            tab.use_txt2img = gr.Checkbox(label="Previews with txt2img's prompt and settings (prompt, negative "
                                                "prompt, steps, sampler, CFG scale, seed, width, height)",
                                          value=False, elem_id=ID + "use_txt2img")


def build_train_tab(backend, txt2img: Optional[list] = None) -> TrainTab:
    """The tab's blocks (inside a gr.Tabs); ``txt2img``: webui's eight txt2img_preview_params, when there are."""
    import gradio as gr

    options = form.train_options(choices(backend), backend.option_defaults())
    tab = TrainTab(options=options, fields=[None] * len(options), txt2img=list(txt2img or []))
    by_name = {o.name: i for i, o in enumerate(options)}
    with gr.Tab("Hypernet: Train", id=ID + "tab", elem_id=ID + "tab") as tab.tab:
        _top(gr, backend, tab, by_name)
        _progress(gr, tab)
        for title in form.SECTIONS:
            if any(o.section == title for o in options):
                _section(gr, title, tab, backend)
        tab.job_id = gr.Textbox(visible=False, elem_id=ID + "job_id")
        tab.task_id = gr.Textbox(visible=False, elem_id=ID + "task_id")
        presets_block(backend, "train", ID, options, tab.fields)
    return tab
