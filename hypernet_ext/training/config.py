"""TrainConfig: every setting of a training run that is not about the data or the network's structure.

Holds the run's length, checkpoint and preview cadence, loss options, precision, and the nested optimizer,
schedule, validation and overtraining-guard configs; FindLRConfig sets up the learning-rate range test.
Validation raises ConfigError naming the field; ``to_dict`` nests plain dicts.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..config import ConfigMixin, real_number, whole_number
from ..errors import ConfigError
from ..fileio import clean_name
from ..optim import OptimizerConfig
from ..schedules import ScheduleConfig

PRECISIONS = ("auto", "no", "fp16", "bf16")
GUARD_ACTIONS = ("warn", "lower-lr", "rollback", "stop")

logger = logging.getLogger(__name__)


@dataclass
class ValidationConfig(ConfigMixin):
    """The validation loss: a fixed set of images, timesteps and noise, evaluated every N steps."""

    every: int = field(default=0, metadata={
        "help": "Compute the validation loss every N steps, and once before the first step (0: off). It also "
                "keeps <name>-best.pt, the snapshot with the lowest validation loss."})
    split: float = field(default=0.0, metadata={
        "help": "Hold out this part of the data set for validation: a fraction below 1 (0.1 = 10%) or a number "
                "of images (5). 0: validate on the training images themselves (fine for tiny data sets)."})
    data_dir: str = field(default="", metadata={
        "help": "A folder of validation images (captioned like the training images); used instead of split."})
    timesteps: int = field(default=4, metadata={
        "help": "Timesteps per validation image, spread evenly over the noise schedule."})
    max_images: int = field(default=16, metadata={
        "help": "Validate on at most this many images (a fixed choice, the same for the whole run)."})
    seed: int = field(default=0, metadata={
        "help": "Seed of the validation noise and of the held-out choice (its own: the training draws are "
                "not touched)."})

    def __post_init__(self):
        self.every = whole_number("validation.every", self.every, 0)
        self.timesteps = whole_number("validation.timesteps", self.timesteps, 1)
        self.max_images = whole_number("validation.max_images", self.max_images, 1)
        self.seed = whole_number("validation.seed", self.seed, None)
        self.data_dir = str(self.data_dir or "").strip()
        split = real_number("validation.split", _off_is_none(self.split), 0.0, note=" (0: the training images)")
        if split >= 1 and not split.is_integer():
            raise ConfigError(f"validation.split: {self.split!r} must be a fraction below 1 (0.1 = 10%) or a "
                              "whole number of images (5)")
        self.split = split


@dataclass
class GuardConfig(ConfigMixin):
    """The overtraining guard: when to act, and what to do."""

    action: str = field(default="warn", metadata={
        "help": "What the guard does when it triggers: warn; lower-lr (multiply the learning rate by lr_factor "
                "from then on); rollback (restore the best snapshot's weights and optimizer state, lower the "
                "rate, continue); stop (end the run at its best snapshot)."})
    margin: float = field(default=0.02, metadata={
        "help": "Trigger when the validation loss is more than this fraction above its best (0.02 = 2%) ..."})
    patience: int = field(default=3, metadata={"help": "... for this many evaluations in a row."})
    max_effect: float = field(default=0.0, metadata={
        "help": "Also trigger when the effect size (mean |f(x)| / |x| at some width) passes this bound (0: off)."})
    diverge_steps: int = field(default=3, metadata={
        "help": "Also trigger after this many non-finite steps in a row, and again after each further as many "
                "(0: off); keep it below max_bad_steps, which stops the run."})
    lr_factor: float = field(default=0.5, metadata={
        "help": "lower-lr and rollback multiply the learning rate by this (between 0 and 1), for the rest of "
                "the run."})
    max_actions: int = field(default=5, metadata={
        "help": "After this many lower-lr or rollback actions, the next trigger stops the run at its best "
                "snapshot."})

    def __post_init__(self):
        action = str(self.action or "warn").strip().lower().replace("_", "-")
        if action not in GUARD_ACTIONS:
            raise ConfigError(f"guard.action: {self.action!r} is not one of {', '.join(GUARD_ACTIONS)}")
        self.action = action
        self.margin = real_number("guard.margin", self.margin, 0.0)
        self.patience = whole_number("guard.patience", self.patience, 1)
        self.max_effect = real_number("guard.max_effect", _off_is_none(self.max_effect), 0.0, note=" (0: off)")
        self.diverge_steps = whole_number("guard.diverge_steps", self.diverge_steps, 0)
        self.max_actions = whole_number("guard.max_actions", self.max_actions, 0)
        self.lr_factor = real_number("guard.lr_factor", self.lr_factor, 0.0, 1.0)
        if not 0 < self.lr_factor < 1:
            raise ConfigError(f"guard.lr_factor: {self.lr_factor!r} must be between 0 and 1 (0.5 halves the "
                              "rate)")


@dataclass
class FindLRConfig(ConfigMixin):
    """The learning-rate range test: a short run whose rate rises exponentially until the loss blows up."""

    start: float = field(default=1e-7, metadata={"help": "The range test's first learning rate."})
    end: float = field(default=1.0, metadata={"help": "The range test's last learning rate."})
    steps: int = field(default=100, metadata={"help": "Steps of the range test (the rate rises every step)."})
    blowup: float = field(default=4.0, metadata={
        "help": "The range test stops when the smoothed loss passes this many times its lowest value."})
    smoothing: float = field(default=0.9, metadata={
        "help": "Smoothing of the range test's loss (exponential moving average, 0 to below 1; 0: none)."})

    def __post_init__(self):
        self.start = real_number("find_lr.start", self.start, 0.0)
        self.end = real_number("find_lr.end", self.end, 0.0)
        if not 0 < self.start < self.end:
            raise ConfigError(f"find_lr.start, find_lr.end: {self.start:g}, {self.end:g}: give 0 < start < end, "
                              "e.g. 1e-7 and 1")
        self.steps = whole_number("find_lr.steps", self.steps, 2)
        self.blowup = real_number("find_lr.blowup", self.blowup, 1.0)
        if self.blowup <= 1:
            raise ConfigError(f"find_lr.blowup: {self.blowup:g} must be above 1 (4: stop at four times the "
                              "lowest loss)")
        self.smoothing = real_number("find_lr.smoothing", self.smoothing, 0.0, 1.0)
        if self.smoothing >= 1:
            raise ConfigError(f"find_lr.smoothing: {self.smoothing:g} must be below 1 (0.9 is usual; 0: none)")


@dataclass
class TrainConfig(ConfigMixin):
    """How long and how to train; where the files go."""

    name: str = field(default="", metadata={
        "help": "Name of the trained network: files are <name>.pt and <name>-<step>.pt. Empty: the network's name. "
                "No path separators and no leading dot; other characters than letters, digits and '._- ' are "
                "dropped, as in webui."})
    out_dir: str = field(default="out", metadata={"help": "Folder for checkpoints, the loss log and previews."})
    log_dir: str = field(default="", metadata={
        "help": "Folder for the loss log and TensorBoard, when they should not go beside the checkpoints. "
                "Empty: out_dir."})
    steps: int = field(default=1000, metadata={
        "help": "Train until the network has done this many optimizer steps (counting steps done before a "
                "resume, as webui does)."})
    grad_accum: int = field(default=1, metadata={
        "help": "Gradient accumulation: batches per optimizer step (effective batch = batch size x this)."})
    save_every: int = field(default=500, metadata={
        "help": "Write <name>-<step>.pt and its .optim every N steps (0: only the final file)."})
    preview_every: int = field(default=0, metadata={"help": "Ask for a preview every N steps (0: never)."})
    log_every: int = field(default=1, metadata={"help": "Write a loss-log row every N steps."})
    seed: int = field(default=0, metadata={
        "help": "Seed of timesteps, noise and dropout: step k draws the same in every run, resumed or not."})
    min_snr_gamma: float = field(default=0.0, metadata={
        "help": "Min-SNR-gamma loss weighting (5 is the usual value; 0: off, every timestep weighs the same)."})
    noise_offset: float = field(default=0.0, metadata={
        "help": "Noise offset: adds this times a per-channel constant to the noise (0.05-0.1 helps very dark or "
                "bright images; 0: off)."})
    grad_checkpointing: bool = field(default=False, metadata={
        "help": "Recompute the UNet's blocks in the backward pass instead of storing them: less memory, slower."})
    mixed_precision: str = field(default="auto", metadata={
        "help": "auto: fp16 with a gradient scaler on CUDA, fp32 on CPU; no: fp32; fp16; bf16 (CUDA only)."})
    max_bad_steps: int = field(default=10, metadata={
        "help": "Stop when this many steps in a row have a non-finite loss or gradient (they are skipped)."})
    tensorboard: bool = field(default=True, metadata={
        "help": "Also log to TensorBoard (<out>/tensorboard) when torch.utils.tensorboard can be imported."})
    save_safetensors: bool = field(default=True, metadata={
        "help": "Also write the final network as <name>.safetensors."})
    save_optimizer: bool = field(default=True, metadata={
        "help": "Write <file>.optim (optimizer state and resume state) beside every .pt file."})
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig, metadata={
        "help": "Optimizer name and arguments."})
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig, metadata={
        "help": "Learning-rate and gradient-clip schedules."})
    validation: ValidationConfig = field(default_factory=ValidationConfig, metadata={
        "help": "Validation loss on a fixed set (off by default)."})
    guard: GuardConfig = field(default_factory=GuardConfig, metadata={
        "help": "The overtraining guard (warns by default)."})

    def __post_init__(self):
        if str(self.name if self.name is not None else "").strip():
            cleaned = clean_name(self.name, "name")
            if cleaned != str(self.name).strip():
                logger.info("name %r is %r in file names (letters, digits and '._- ' only, as in webui)",
                            self.name, cleaned)
            self.name = cleaned
        else:
            self.name = ""
        self.out_dir = str(self.out_dir or "").strip()
        if not self.out_dir:
            raise ConfigError("out_dir: give the folder the checkpoints should go to")
        self.log_dir = str(self.log_dir or "").strip()
        self.steps = whole_number("steps", self.steps, 1)
        self.grad_accum = whole_number("grad_accum", self.grad_accum, 1)
        self.save_every = whole_number("save_every", self.save_every, 0)
        self.preview_every = whole_number("preview_every", self.preview_every, 0)
        self.log_every = whole_number("log_every", self.log_every, 1)
        self.seed = whole_number("seed", self.seed, None)
        self.max_bad_steps = whole_number("max_bad_steps", self.max_bad_steps, 1)
        self.min_snr_gamma = real_number("min_snr_gamma", _off_is_none(self.min_snr_gamma), 0.0, note=" (0: off)")
        self.noise_offset = real_number("noise_offset", _off_is_none(self.noise_offset), 0.0, note=" (0: off)")
        for name in ("grad_checkpointing", "tensorboard", "save_safetensors", "save_optimizer"):
            setattr(self, name, bool(getattr(self, name)))
        precision = str(self.mixed_precision or "auto").strip().lower()
        precision = {"fp32": "no", "none": "no", "false": "no", "off": "no"}.get(precision, precision)
        if precision not in PRECISIONS:
            raise ConfigError(f"mixed_precision: {self.mixed_precision!r} is not one of {', '.join(PRECISIONS)}")
        self.mixed_precision = precision
        if isinstance(self.optimizer, dict):
            self.optimizer = OptimizerConfig.from_dict(self.optimizer)
        elif isinstance(self.optimizer, str):
            self.optimizer = OptimizerConfig(name=self.optimizer)
        for name, cls in (("schedule", ScheduleConfig), ("validation", ValidationConfig), ("guard", GuardConfig)):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, cls.from_dict(getattr(self, name)))
        for name, cls in (("optimizer", OptimizerConfig), ("schedule", ScheduleConfig),
                          ("validation", ValidationConfig), ("guard", GuardConfig)):
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"{name}: expected a {cls.__name__}, got {type(getattr(self, name)).__name__}")
        if self.guard.action == "rollback" and not self.save_optimizer:
            raise ConfigError("guard.action: rollback restores the best snapshot's optimizer state, which "
                              "save_optimizer off does not write: turn save_optimizer on or choose another action")

    def to_dict(self) -> dict:
        out = super().to_dict()
        for name in ("optimizer", "schedule", "validation", "guard"):
            out[name] = getattr(self, name).to_dict()
        return out


def _off_is_none(value):
    return 0.0 if value is None else value
