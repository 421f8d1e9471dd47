"""The presets accordion of the Create and Train tabs: save the form's values as a JSON preset, load one back
(hypernet_ext.ui.presets does the files)."""
from __future__ import annotations

from ..errors import HypernetError
from . import form
from .presets import load_preset, preset_names, save_preset
from .views import message_html


def presets_block(backend, kind: str, prefix: str, options, components):
    """An accordion with the presets of ``kind`` for ``components`` (one per option); returns its components."""
    import gradio as gr

    folder = backend.presets_folder()
    with gr.Accordion("Presets", open=False, elem_id=prefix + "presets"):
        with gr.Row():
            chosen = gr.Dropdown(label="Preset", choices=preset_names(folder, kind), elem_id=prefix + "preset")
            refresh = form.refresh_button(prefix + "preset_refresh")
            load = gr.Button("Load preset", elem_id=prefix + "preset_load")
        with gr.Row():
            name = gr.Textbox(label="Save as", placeholder="preset name", elem_id=prefix + "preset_name")
            replace = gr.Checkbox(label="Replace", value=False, elem_id=prefix + "preset_replace")
            save = gr.Button("Save preset", elem_id=prefix + "preset_save")
        result = gr.HTML(elem_id=prefix + "preset_result")

    def saved(name_value, replace_value, *values):
        data = {o.name: form.value_in(o, v) for o, v in zip(options, values)}
        try:
            path = save_preset(folder, kind, name_value, data, overwrite=bool(replace_value))
        except (HypernetError, FileExistsError, OSError) as err:
            return message_html(str(err)), gr.update()
        return message_html(f"Saved {path}", "ok"), gr.update(choices=preset_names(folder, kind), value=path.stem)

    def loaded(name_value):
        try:
            values, unknown = load_preset(folder, kind, name_value, [o.name for o in options])
        except HypernetError as err:
            return [message_html(str(err))] + [gr.update() for _ in options]
        note = f"Loaded {name_value}" + (f"; options this version does not have were left out: "
                                         f"{', '.join(unknown)}" if unknown else "")
        return [message_html(note, "ok")] + [gr.update(value=o.display(values[o.name])) if o.name in values
                                              else gr.update() for o in options]

    refresh.click(lambda: gr.update(choices=preset_names(folder, kind)), outputs=[chosen])
    save.click(saved, inputs=[name, replace] + list(components), outputs=[result, chosen])
    load.click(loaded, inputs=[chosen], outputs=[result] + list(components))
    return [chosen, name, replace]
