"""A training request: one flat set of options built from the config dataclasses, and the plan of a run.

Every field of TrainConfig, of the configs nested in it (schedule and optimizer fields under their own names,
``val_*`` for validation, ``guard_*`` for the guard, and so on for any new one), of DataConfig and of RunConfig
is a request option (``request_fields()``; a name two configs share, such as ``seed``, sets both, as on the
command line), except those the host sets itself: the network's name and its folders. A new config field is an
option without any edit here. The REST API, the Train tab and the standalone app take their options from here;
``build_plan`` turns given values (and the host's defaults for the rest) into validated configs; a ConfigError
carries ``field``, the option's request name. ``finder_fields()`` are the range test's options (``find_lr_*``).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..config import ConfigMixin, default_of, help_of
from ..data import DataConfig
from ..errors import ConfigError
from ..optim import OptimizerConfig
from .config import FindLRConfig, TrainConfig


@dataclass
class RunConfig(ConfigMixin):
    """Options of a run beyond the trainer: its previews (rendered by the host: webui's txt2img, the standalone
    app's DDIM sampler) and where the model's parts wait."""

    preview_prompt: str = field(default="", metadata={
        "help": "Prompt of the previews (extra-network tags in it are ignored). Empty: the first training prompt."})
    preview_negative_prompt: str = field(default="", metadata={"help": "Negative prompt of the previews."})
    preview_steps: int = field(default=20, metadata={"help": "Sampling steps of a preview."})
    preview_sampler: str = field(default="", metadata={
        "help": "Sampler of the previews, by webui's name or alias (e.g. 'Euler a'). Empty: webui's default."})
    preview_cfg_scale: float = field(default=7.0, metadata={"help": "CFG scale of the previews."})
    preview_seed: int = field(default=1234, metadata={
        "help": "Seed of every preview, fixed so previews compare across steps; -1: a new random seed each time."})
    preview_width: int = field(default=0, metadata={"help": "Preview width; 0: the training images' width."})
    preview_height: int = field(default=0, metadata={"help": "Preview height; 0: the training images' height."})
    optimizer_to_cpu: bool = field(default=True, metadata={
        "help": "Move the optimizer state to the CPU while a preview renders."})
    unload_vae: bool = field(default=False, metadata={"help": "Move the VAE to the CPU once the latents are cached."})
    unload_text_encoder: bool = field(default=False, metadata={
        "help": "Move the text encoder to the CPU once the conditioning of every training prompt is cached."})

    def __post_init__(self):
        for name in ("preview_steps", "preview_seed", "preview_width", "preview_height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name}: {value!r} must be a whole number")
        if self.preview_steps < 1:
            raise ConfigError(f"preview_steps: {self.preview_steps} must be at least 1")
        for name in ("preview_width", "preview_height"):
            value = getattr(self, name)
            if value < 0 or value % 8:
                raise ConfigError(f"{name}: {value} must be 0 (the training size) or a positive multiple of 8")
        if isinstance(self.preview_cfg_scale, bool) or not isinstance(self.preview_cfg_scale, (int, float)):
            raise ConfigError(f"preview_cfg_scale: {self.preview_cfg_scale!r} must be a number")
        for name in ("optimizer_to_cpu", "unload_vae", "unload_text_encoder"):
            setattr(self, name, bool(getattr(self, name)))
        self.preview_prompt = str(self.preview_prompt or "")
        self.preview_negative_prompt = str(self.preview_negative_prompt or "")
        self.preview_sampler = str(self.preview_sampler or "").strip()


# a config nested in TrainConfig gives its fields as options named "<prefix>_<field>"; the prefix is the
# attribute's name unless listed here ("": the field's own name, as the command line has them)
NESTED_PREFIX = {"optimizer": "", "schedule": "", "validation": "val"}
ALIASES = {(OptimizerConfig, "name"): "optimizer", (OptimizerConfig, "kwargs"): "optimizer_args"}
SET_BY_SESSION = {
    (TrainConfig, "name"): "the network's name",
    (TrainConfig, "out_dir"): "the network file's folder",
    (TrainConfig, "log_dir"): "the setting hypernet_ext_log_dir",
    (DataConfig, "name"): "the network's name (the template's [name])",
}


def nested_configs() -> List[Tuple[str, type]]:
    """(attribute, config class) of every config nested in TrainConfig (optimizer, schedule, validation, ...)."""
    hints = typing.get_type_hints(TrainConfig)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(TrainConfig)
            if isinstance(hints[f.name], type) and dataclasses.is_dataclass(hints[f.name])
            and issubclass(hints[f.name], ConfigMixin)]


def sources() -> List[Tuple[type, str]]:
    """(config class, option prefix) of every config a training request fills, in order."""
    nested = [(cls, NESTED_PREFIX.get(attribute, attribute)) for attribute, cls in nested_configs()]
    return [(TrainConfig, "")] + nested + [(DataConfig, ""), (RunConfig, "")]


@dataclass
class RequestField:
    """One option of a training request and the config fields it sets."""
    name: str
    targets: List[Tuple[type, str]]
    type: Any
    default: Any
    help: str


def request_fields() -> Dict[str, RequestField]:
    """Option name -> RequestField, in config order (see the module docstring)."""
    out: Dict[str, RequestField] = {}
    nested = {cls for _, cls in nested_configs()}
    for cls, prefix in sources():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if (cls, f.name) in SET_BY_SESSION or f.metadata.get("internal") or hints[f.name] in nested:
                continue
            name = ALIASES.get((cls, f.name), f"{prefix}_{f.name}" if prefix else f.name)
            if name in out:
                out[name].targets.append((cls, f.name))
                continue
            out[name] = RequestField(name, [(cls, f.name)], hints[f.name], default_of(cls, f.name),
                                     help_of(cls, f.name))
    return out


@dataclass
class TrainPlan:
    """Validated configs of one run, and where its files go."""
    train: TrainConfig
    data: DataConfig
    run: RunConfig
    resume: bool


def _error_field(cls, error: ConfigError) -> Optional[str]:
    """The option a config's error is about: its message starts with the field ("steps: ..." or, in nested
    configs, "validation.every: ...")."""
    named = str(error).split(":", 1)[0].strip().rsplit(".", 1)[-1]
    for option, spec in request_fields().items():
        if (cls, named) in spec.targets:
            return option
    return None


def _build(cls, kwargs: dict):
    try:
        return cls(**kwargs)
    except ConfigError as err:
        err.field = getattr(err, "field", None) or _error_field(cls, err)
        raise


def _optimizer(kwargs: dict) -> OptimizerConfig:
    """The name alone first, so an error names the option that is wrong (optimizer or optimizer_args)."""
    try:
        OptimizerConfig(**{k: v for k, v in kwargs.items() if k != "kwargs"})
    except ConfigError as err:
        err.field = "optimizer"
        raise
    try:
        return OptimizerConfig(**kwargs)
    except ConfigError as err:
        err.field = "optimizer_args"
        raise


def build_plan(values: Dict[str, Any], name: str, out_dir: str, log_dir: str, resume: bool,
               host_defaults: Optional[Dict[str, Any]] = None) -> TrainPlan:
    """Configs from the options given (``values``), the host's defaults (``host_defaults``: option -> value, e.g.
    webui's settings) for options not given, and the dataclass defaults for the rest. Raises ConfigError (with
    ``field``) for an unknown option or a bad value."""
    host_defaults = host_defaults or {}
    fields = request_fields()
    unknown = sorted(set(values) - set(fields))
    if unknown:
        error = ConfigError(f"{unknown[0]}: not an option of a training request; known options are "
                            f"{', '.join(fields)}")
        error.field = unknown[0]
        raise error
    kwargs: Dict[type, dict] = {cls: {} for cls, _ in sources()}
    for option, spec in fields.items():
        if option in values:
            value = values[option]
        elif option in host_defaults:
            value = host_defaults[option]
        else:
            continue
        for cls, field_name in spec.targets:
            kwargs[cls][field_name] = value
    kwargs[DataConfig]["name"] = name
    nested = {attribute: _optimizer(kwargs[cls]) if cls is OptimizerConfig else _build(cls, kwargs[cls])
              for attribute, cls in nested_configs()}
    train = _build(TrainConfig, dict(kwargs[TrainConfig], name=name, out_dir=out_dir, log_dir=log_dir, **nested))
    data = _build(DataConfig, kwargs[DataConfig])
    run = _build(RunConfig, kwargs[RunConfig])
    return TrainPlan(train, data, run, bool(resume))


FINDER_PREFIX = "find_lr_"


def finder_fields() -> Dict[str, RequestField]:
    """The range test's options: ``find_lr_<field>`` for every field of FindLRConfig."""
    hints = typing.get_type_hints(FindLRConfig)
    return {FINDER_PREFIX + f.name: RequestField(FINDER_PREFIX + f.name, [(FindLRConfig, f.name)], hints[f.name],
                                                 default_of(FindLRConfig, f.name), help_of(FindLRConfig, f.name))
            for f in dataclasses.fields(FindLRConfig)}


def build_finder(values: Dict[str, Any]) -> FindLRConfig:
    """FindLRConfig from ``find_lr_*`` options (others are an error); ConfigError with ``field``."""
    fields = finder_fields()
    unknown = sorted(set(values) - set(fields))
    if unknown:
        error = ConfigError(f"{unknown[0]}: not an option of the range test; its options are {', '.join(fields)}")
        error.field = unknown[0]
        raise error
    try:
        return FindLRConfig(**{name[len(FINDER_PREFIX):]: value for name, value in values.items()})
    except ConfigError as err:
        named = str(err).split(":", 1)[0].split(",", 1)[0].strip().rsplit(".", 1)[-1]
        err.field = FINDER_PREFIX + named if FINDER_PREFIX + named in fields else None
        raise


def set_data_dir(options: Dict[str, Any], data_dir=None) -> None:
    """Put ``data_dir`` (when given) into the options and check that it is a folder; ConfigError with ``field``."""
    if data_dir is not None:
        options["data_dir"] = data_dir
    if not options.get("data_dir") or not Path(str(options["data_dir"])).expanduser().is_dir():
        error = ConfigError(f"data_dir: {options.get('data_dir')!r} is not a folder; give the folder that holds "
                            "the training images")
        error.field = "data_dir"
        raise error
