"""Our section of webui's settings (keys start with ``hypernet_ext_``), and reading them with their defaults.

Registered from ``on_ui_settings``; ``remove()`` takes the entries out of ``shared.opts`` again on script unload
(saved values stay in the settings file). Components are left to webui, which picks them from the default's type.
"""
from __future__ import annotations

from typing import Dict, Tuple

SECTION = ("hypernet_ext", "Hypernetworks (hypernet_ext)")
CATEGORY = "training"

# key -> (default, label)
OPTIONS: Dict[str, Tuple[object, str]] = {
    "hypernet_ext_save_every": (500, "Save a snapshot (<name>-<step>.pt and its .optim) every N steps; 0: only at "
                                     "the end"),
    "hypernet_ext_preview_every": (0, "Render a preview through txt2img every N steps; 0: never"),
    "hypernet_ext_save_optimizer_state": (True, "Save the optimizer state (.optim) beside every checkpoint, so "
                                                "training can resume exactly (also when webui's own 'Saves "
                                                "Optimizer state' is on)"),
    "hypernet_ext_optimizer_to_cpu": (True, "Move the optimizer state to the CPU while a preview renders"),
    "hypernet_ext_unload_vae": (False, "Move the VAE to the CPU once the training latents are cached"),
    "hypernet_ext_unload_text_encoder": (False, "Move the text encoder to the CPU once the conditioning of every "
                                                "training prompt is cached (not with tag shuffle or tag dropout)"),
    "hypernet_ext_log_dir": ("textual_inversion", "Folder for loss logs, TensorBoard and previews; a relative path "
                                                  "is inside webui's data folder (<folder>/<date>/<name>)"),
    "hypernet_ext_network_cache": (4, "Hypernetworks kept loaded for generation (by file and modification time)"),
}


def register() -> None:
    """Add our options to webui's settings (called from on_ui_settings)."""
    from modules import shared

    for key, (default, label) in OPTIONS.items():
        shared.opts.add_option(key, shared.OptionInfo(default, label, section=SECTION, category_id=CATEGORY))


def remove() -> None:
    """Take our options out of the settings page (their saved values stay in shared.opts.data)."""
    from modules import shared

    labels = getattr(getattr(shared, "opts", None), "data_labels", None)
    if labels is None:
        return
    for key in OPTIONS:
        labels.pop(key, None)


def get(key: str):
    """The option's value, of its default's type (gr.Number gives floats), or the default when unset."""
    from modules import shared

    default = OPTIONS[key][0]
    value = getattr(shared.opts, "data", {}).get(key, default)
    try:
        return type(default)(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def webui_option(key: str, fallback):
    """One of webui's own options (e.g. dataset_filename_word_regex), or ``fallback`` when absent."""
    from modules import shared

    data = getattr(shared.opts, "data", {})
    if key in data:
        return data[key]
    label = getattr(shared.opts, "data_labels", {}).get(key)
    return label.default if label is not None else fallback
