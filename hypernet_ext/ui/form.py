"""The option fields of the tabs, built from the config dataclasses: every training option
(hypernet_ext.training.request), every range-test option and every field of a new network (NetworkConfig), each
with its help text as the field's description and its default from the config (or the host).

``Option`` says what one field is (kind, label, choices, section); ``component`` makes its gradio component;
``value_in`` turns what the component gives back into what the config takes. No label or default is written
here: labels come from the option names, help and defaults from the dataclasses.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from ..config import NetworkConfig, default_of, help_of

PREFIX = "hypernet_ext_"
REFRESH = "\u21bb"   # the refresh buttons' symbol (webui's emoji has no glyph in many fonts)
TOP = ("data_dir", "learn_rate", "steps", "batch_size")   # the common path of the Train tab, above everything
# the Train tab's accordions, in order; an option goes where SECTION_OF names it, else where its config goes
SECTIONS = ("Schedule details", "Learning-rate range test", "Optimizer", "Gradient clipping", "Data and buckets",
            "Templates and captions", "Validation and overtraining guard", "Previews", "Precision and memory",
            "Saving and logs", "Loss and seeds", "More options")
SECTION_OF = {
    "clip_grad_mode": "Gradient clipping", "clip_grad_value": "Gradient clipping", "grad_accum": "Optimizer",
    "template": "Templates and captions", "shuffle_tags": "Templates and captions",
    "tag_dropout": "Templates and captions", "filename_regex": "Templates and captions",
    "filename_join": "Templates and captions", "preview_every": "Previews",
    "mixed_precision": "Precision and memory", "grad_checkpointing": "Precision and memory",
    "optimizer_to_cpu": "Precision and memory", "unload_vae": "Precision and memory",
    "unload_text_encoder": "Precision and memory", "save_every": "Saving and logs",
    "save_optimizer": "Saving and logs", "save_safetensors": "Saving and logs", "tensorboard": "Saving and logs",
    "log_every": "Saving and logs",
}
SECTION_OF_CONFIG = {"ScheduleConfig": "Schedule details", "OptimizerConfig": "Optimizer",
                     "ValidationConfig": "Validation and overtraining guard",
                     "GuardConfig": "Validation and overtraining guard", "DataConfig": "Data and buckets",
                     "RunConfig": "Previews", "TrainConfig": "Loss and seeds",
                     "FindLRConfig": "Learning-rate range test"}
LABEL_PREFIXES = (("val_", "Validation: "), ("guard_", "Guard: "), ("find_lr_", "Range test: "),
                  ("preview_", "Preview: "))
LABELS = {"learn_rate": "Learning-rate schedule", "data_dir": "Dataset folder"}
WORDS = {"lr": "LR", "dir": "folder", "cfg": "CFG", "vae": "VAE", "snr": "SNR", "args": "arguments"}


@dataclass
class Option:
    """One field of a form."""
    name: str
    kind: str                       # bool, int, float, text, choice
    default: Any
    help: str
    optional: bool = False          # empty is a valid value (None)
    choices: Optional[Callable[[], List[str]]] = None
    custom: bool = False            # a dropdown that also takes a typed value (a template path)
    section: str = ""

    @property
    def label(self) -> str:
        name = self.name
        if name in LABELS:
            return LABELS[name]
        for prefix, shown in LABEL_PREFIXES:
            if name.startswith(prefix):
                return shown + _words(name[len(prefix):])
        text = _words(name)
        return text[:1].upper() + text[1:]

    def display(self, value=...):
        """``value`` (default: the option's default) as the component shows it."""
        value = self.default if value is ... else value
        if isinstance(value, (tuple, list)):
            return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        if isinstance(value, dict):
            return " ".join(f"{k}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                            for k, v in value.items())
        if value is None:
            return "none" if self.kind == "choice" else None if self.kind in ("int", "float") else ""
        return value


def _words(name: str) -> str:
    return " ".join(WORDS.get(word, word) for word in name.split("_"))


def _kind(hint) -> tuple:
    """(kind, optional) of a dataclass field's type."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = typing.get_origin(hint) is typing.Union and len(args) < len(typing.get_args(hint))
    base = args[0] if optional and len(args) == 1 else hint
    kind = {bool: "bool", int: "int", float: "float"}.get(base, "text")
    if optional and kind in ("int", "float"):
        kind = "text"   # a number box cannot be empty; the configs read numbers from text
    return kind, optional


def option_from(name: str, hint, default, help_text: str, choices=None, custom=False, section="") -> Option:
    kind, optional = _kind(hint)
    if choices is not None:
        kind = "choice"
    return Option(name, kind, default, help_text, optional or default is None, choices, custom, section)


def train_options(choices: Dict[str, Callable[[], List[str]]], defaults: Dict[str, Any]) -> List[Option]:
    """Every training option and range-test option, with ``choices`` (option -> callable) and the host's
    ``defaults`` over the configs'."""
    from ..training.request import finder_fields, request_fields

    out = []
    fields = dict(request_fields(), **finder_fields())
    for name, spec in fields.items():
        config = spec.targets[0][0].__name__
        section = "" if name in TOP else SECTION_OF.get(name) or SECTION_OF_CONFIG.get(config, "More options")
        default = defaults.get(name, spec.default)
        out.append(option_from(name, spec.type, default, spec.help, choices.get(name), name in CUSTOM, section))
    return out


CUSTOM = ("template", "preview_sampler")   # a typed value is fine too (a template file, a sampler alias)


def network_options(choices: Dict[str, Callable[[], List[str]]]) -> List[Option]:
    """Every field of a new network (NetworkConfig), sizes aside (the Create tab offers the model's widths)."""
    hints = typing.get_type_hints(NetworkConfig)
    return [option_from(f.name, hints[f.name], default_of(NetworkConfig, f.name), help_of(NetworkConfig, f.name),
                        choices.get(f.name))
            for f in dataclasses.fields(NetworkConfig) if not f.metadata.get("internal") and f.name != "sizes"]


def value_in(option: Option, raw):
    """What a component gave back, as the config takes it: empty optional fields are None, whole numbers int."""
    if raw is None or (isinstance(raw, str) and not raw.strip() and option.optional):
        return None
    if option.kind == "int" and isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if option.kind == "choice" and option.name == "upsample" and raw == "none":
        return None
    return raw


def component(option: Option, element_id: str, value=None):
    """The gradio component of ``option`` (its id ``element_id``), showing ``value`` or the default."""
    import gradio as gr

    shown = option.display() if value is None else option.display(value)
    common = dict(label=option.label, info=option.help or None, elem_id=element_id)
    if option.kind == "bool":
        return gr.Checkbox(value=bool(shown), **common)
    if option.kind == "choice":
        choices = list(option.choices())
        if shown not in choices and not option.custom:
            choices = [shown] + choices
        return gr.Dropdown(choices=choices, value=shown, allow_custom_value=option.custom, **common)
    if option.kind in ("int", "float"):
        return gr.Number(value=shown, precision=0 if option.kind == "int" else None, **common)
    return gr.Textbox(value=shown, lines=1, **common)


def scope(block, source: str) -> None:
    """webui keeps the values (and visibility) of a tab's components in ui-config.json under
    ``<tab>/<label>/<field>``, so a component of ours labelled like one of webui's ("Interrupt", "Steps") would share
    its key and take its saved value. Marked with ``custom_script_source`` (as webui marks a script's), every
    component inside ``block`` is kept under ``customscript/<source>/...`` instead, apart from webui's and from our
    other tabs'."""
    block.custom_script_source = source
    for child in getattr(block, "children", None) or []:
        scope(child, source)


def refresh_button(element_id: str):
    """A small button with the refresh symbol, as webui puts beside its lists."""
    import gradio as gr

    return gr.Button(REFRESH, elem_id=element_id, elem_classes=["hypernet-ext-tool"])
