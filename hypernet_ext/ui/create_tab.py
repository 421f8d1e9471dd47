"""The Create tab: every field of a new network (NetworkConfig), the widths offered being the loaded model's
attention widths; presets; the result names the file written; no overwrite unless asked. A new network is
selected in the Train and Compare tabs' network lists at once.
"""
from __future__ import annotations

import logging

from .. import formats
from ..errors import HypernetError
from ..layers import CREATABLE_ACTIVATIONS, UPSAMPLE_MODES, WEIGHT_INITS
from . import form
from .presets_block import presets_block
from .views import message_html

logger = logging.getLogger(__name__)

ID = form.PREFIX + "create_"
CHOICES = {"activation": lambda: sorted(CREATABLE_ACTIVATIONS), "weight_init": lambda: list(WEIGHT_INITS),
           "upsample": lambda: [mode or "none" for mode in UPSAMPLE_MODES]}


def created_html(path) -> str:
    info = formats.describe(path)
    count = info.config.parameter_count()
    return message_html(f"Created {path}\nwidths {', '.join(map(str, info.widths))}; {info.config.describe()}; "
                        f"{count:,} parameters. It is selected in the Train tab.", "ok")


def build_create_tab(backend):
    """The tab's blocks (inside a gr.Tabs). Returns ``connect(network_lists)``, to be called once the other tabs
    exist: a new network is then selected in those dropdowns."""
    import gradio as gr

    options = form.network_options(CHOICES)
    widths = [str(w) for w in backend.model_widths()]
    with gr.Tab("Hypernet: Create", id=ID + "tab", elem_id=ID + "tab") as tab:
        with gr.Row():
            name = gr.Textbox(label="Name", info="The file is <name>.pt in the hypernetwork folder.",
                              elem_id=ID + "name")
            overwrite = gr.Checkbox(label="Replace an existing network of that name", value=False,
                                    elem_id=ID + "overwrite")
        with gr.Row():
            sizes = gr.CheckboxGroup(label="Attention widths (those of the loaded model)", choices=widths,
                                     value=widths, elem_id=ID + "sizes")
            refresh = form.refresh_button(ID + "sizes_refresh")
        components = []
        with gr.Row(elem_classes=["hypernet-ext-grid"]):
            for option in options:
                components.append(form.component(option, ID + option.name))
        with gr.Row():
            create = gr.Button("Create hypernetwork", variant="primary", elem_id=ID + "button")
        result = gr.HTML(elem_id=ID + "result")
        presets_block(backend, "create", ID, options, components)

    def refresh_widths():
        found = [str(w) for w in backend.model_widths()]
        return gr.update(choices=found, value=found)

    def run(name_value, overwrite_value, sizes_value, *values):
        fields = {o.name: form.value_in(o, v) for o, v in zip(options, values)}
        fields["sizes"] = [int(w) for w in sizes_value] or None
        try:
            path = backend.create_network(name_value, overwrite=bool(overwrite_value), **fields)
        except (HypernetError, FileExistsError) as err:
            return [message_html(str(err))] + [gr.update() for _ in network_lists]
        except Exception as err:   # noqa: BLE001 - shown in the tab, the trace goes to the console
            logger.exception("creating a hypernetwork failed")
            return [message_html(f"{type(err).__name__}: {err} (see the console)")] + \
                [gr.update() for _ in network_lists]
        names = backend.network_names()
        return [created_html(path)] + [gr.update(choices=names, value=path.stem) for _ in network_lists]

    refresh.click(refresh_widths, outputs=[sizes])
    # inside webui the model may still be loading when the tabs are built: the widths come when the tab opens
    tab.select(lambda chosen: gr.update() if chosen else refresh_widths(), inputs=[sizes], outputs=[sizes])

    def connect(lists):
        network_lists[:] = list(lists)
        create.click(run, inputs=[name, overwrite, sizes] + components, outputs=[result] + network_lists)

    network_lists = []
    return connect
