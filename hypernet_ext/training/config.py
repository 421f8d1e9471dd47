"""TrainConfig: every setting of a training run that is not about the data or the network's structure.

Holds the run's length, checkpoint and preview cadence, loss options, precision, and the nested optimizer and
schedule configs. Validation raises ConfigError naming the field; ``to_dict`` nests plain dicts.
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

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig(ConfigMixin):
    """How long and how to train; where the files go."""

    name: str = field(default="", metadata={
        "help": "Name of the trained network: files are <name>.pt and <name>-<step>.pt. Empty: the network's name. "
                "No path separators and no leading dot; other characters than letters, digits and '._- ' are "
                "dropped, as in webui."})
    out_dir: str = field(default="out", metadata={"help": "Folder for checkpoints, the loss log and previews."})
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
        if isinstance(self.schedule, dict):
            self.schedule = ScheduleConfig.from_dict(self.schedule)
        if not isinstance(self.optimizer, OptimizerConfig):
            raise ConfigError(f"optimizer: expected an OptimizerConfig, got {type(self.optimizer).__name__}")
        if not isinstance(self.schedule, ScheduleConfig):
            raise ConfigError(f"schedule: expected a ScheduleConfig, got {type(self.schedule).__name__}")

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["optimizer"] = self.optimizer.to_dict()
        out["schedule"] = self.schedule.to_dict()
        return out


def _off_is_none(value):
    return 0.0 if value is None else value
