"""Configuration dataclasses.

Each config has defaults, help text in field metadata (the UI and CLI read labels from it), validation in
``__post_init__`` that raises ConfigError naming the field, and ``to_dict`` / ``from_dict`` that carry a
format version and ignore unknown keys.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar, Optional, Tuple

from .errors import ConfigError, excerpt
from .layers import ACTIVATIONS, CREATABLE_ACTIVATIONS, REFUSED_ACTIVATIONS, UPSAMPLE_MODES, WEIGHT_INITS

CONFIG_VERSION = 1
# Bounds on a network's structure, checked before anything is allocated (files come from strangers).
MAX_WIDTHS = 64                 # SD models have 4 (SD1/2) or 3 (SDXL) attention widths
MAX_WIDTH = 16384               # the widest attention in Stable Diffusion models is 2048
MAX_LAYERS = 64                 # layer_structure entries
MAX_MULTIPLIER = 64             # a layer_structure entry (webui's own networks use 1 to 4)
MAX_PARAMETERS = 1_000_000_000  # 4 GB as float32, before the optimizer's state


def _field(cls, name: str) -> dataclasses.Field:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    raise KeyError(name)


def help_of(cls, name: str) -> str:
    """Help text of field ``name`` of config class ``cls``."""
    return _field(cls, name).metadata.get("help", "")


def default_of(cls, name: str):
    """Default value of field ``name`` of config class ``cls`` (a fresh one for default factories)."""
    f = _field(cls, name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


class ConfigMixin:
    """to_dict / from_dict shared by every config dataclass."""

    version: ClassVar[int] = CONFIG_VERSION

    def to_dict(self) -> dict:
        out = {"config_version": self.version}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def whole_number(name: str, value, minimum: Optional[int] = None) -> int:
    """``value`` as an int for config field ``name``: 3, 3.0, "3" and " 3.0 " give 3; a bool, a fraction or text
    that is no number is a ConfigError naming the field, and so is a value below ``minimum``."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = int(value)
    else:
        found = _float_or_none(value)
        if found is None or not found.is_integer():
            raise ConfigError(f"{name}: {value!r} must be a whole number")
        number = int(found)
    if minimum is not None and number < minimum:
        raise ConfigError(f"{name}: {number} must be at least {minimum}")
    return number


def real_number(name: str, value, low: Optional[float] = None, high: Optional[float] = None,
                note: str = "") -> float:
    """``value`` as a finite float for config field ``name``, within [low, high] where given; otherwise a
    ConfigError naming the field, the value and the bounds (``note`` is added, e.g. " (0: off)")."""
    number = _float_or_none(value)
    if number is None or (low is not None and number < low) \
            or (high is not None and number > high):
        if low is not None and high is not None:
            bounds = f" between {low:g} and {high:g}"
        else:
            bounds = f" >= {low:g}" if low is not None else (f" <= {high:g}" if high is not None else "")
        raise ConfigError(f"{name}: {value!r} must be a number{bounds}{note}")
    return number


def _float_or_none(value) -> Optional[float]:
    """A finite float from a number or numeric text; None for bools, other types, text and inf/nan."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _floats(name: str, value) -> Tuple[float, ...]:
    if isinstance(value, str):
        pieces = [p.strip() for p in value.split(",") if p.strip()]
        try:
            return tuple(float(p) for p in pieces)
        except ValueError:
            raise ConfigError(f"{name}: {excerpt(value)} is not a comma-separated list of numbers, e.g. '1, 2, 1'") \
                from None
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: {excerpt(value)} is not a list of numbers") from None


def _ints(name: str, value) -> Tuple[int, ...]:
    if isinstance(value, (int, str)):
        value = str(value).split(",")
    out = []
    for v in value:
        try:
            width = int(str(v).strip())
        except ValueError:
            raise ConfigError(f"{name}: {excerpt(v)} is not a whole number; widths look like 768, 1024 or 320") \
                from None
        if width <= 0:
            raise ConfigError(f"{name}: width {width} must be positive")
        out.append(width)
    if not out:
        raise ConfigError(f"{name}: give at least one width (768 for SD1, 1024 for SD2, 2048 for SDXL)")
    return tuple(dict.fromkeys(out))


def parameter_count(sizes, layer_structure, layer_norm: bool = False, linear_upsample: bool = False) -> int:
    """Weights of a network with these widths and structure: per width, a k and a v module, each a Linear (and
    LayerNorm, and for residual blocks with Linear upsampling a bias-free projection) per layer."""
    total = 0
    for width in sizes:
        dims = [int(width * m) for m in layer_structure]
        for n_in, n_out in zip(dims, dims[1:]):
            total += 2 * (n_in * n_out + n_out + (2 * n_out if layer_norm else 0) + (n_in * n_out if linear_upsample
                                                                                       else 0))
    return total


def _amount(count: int) -> str:
    number = f"{count:,}" if count < 10 ** 15 else f"{count:.3g}"
    return f"{number} parameters ({count * 4 / 2 ** 30:,.3g} GiB as float32)"


def dropout_from_webui(layer_structure, use_dropout: bool, last_layer_dropout: bool) -> Tuple[float, ...]:
    """webui's rule for files that only say use_dropout/last_layer_dropout: 0.3 after each hidden layer."""
    n = len(layer_structure)
    if not use_dropout:
        return (0.0,) * n
    values = [0.0] + [0.3] * (n - 3) + [0.3 if last_layer_dropout else 0.0] + [0.0]
    return tuple(values[:n]) if n >= 2 else (0.0,) * n


@dataclass
class NetworkConfig(ConfigMixin):
    """The structure of a hypernetwork: the same fields webui and the peer extension store in their files."""

    sizes: Tuple[int, ...] = field(default=(768, 320, 640, 1280), metadata={
        "help": "Attention widths to cover: 768 (SD1), 1024 (SD2), 2048 (SDXL), 320/640/1280 (self-attention)."})
    layer_structure: Tuple[float, ...] = field(default=(1.0, 2.0, 1.0), metadata={
        "help": "Widths of the MLP as multiples of the input width; starts and ends with 1, e.g. 1, 2, 1."})
    activation: str = field(default="linear", metadata={
        "help": "Activation after each hidden layer (webui names: linear, relu, leakyrelu, elu, swish = Hardswish, "
                "silu, gelu, mish, ...)."})
    weight_init: str = field(default="Normal", metadata={
        "help": "Initialisation of the linear layers: Normal, XavierUniform, XavierNormal, KaimingUniform, "
                "KaimingNormal."})
    normal_std: float = field(default=0.01, metadata={"help": "Standard deviation of the Normal initialisation."})
    add_layer_norm: bool = field(default=False, metadata={"help": "Add a LayerNorm after each linear layer."})
    use_dropout: bool = field(default=False, metadata={"help": "Use dropout while training."})
    dropout_structure: Optional[Tuple[float, ...]] = field(default=None, metadata={
        "help": "Dropout probability after each layer, one per layer-structure entry, first and last 0, "
                "e.g. 0, 0.1, 0. Empty: 0.3 after hidden layers, as webui does."})
    last_layer_dropout: bool = field(default=False, metadata={
        "help": "With the default dropout structure, also drop out after the last hidden layer."})
    activate_output: bool = field(default=False, metadata={"help": "Apply the activation after the output layer too."})
    skip_connection: bool = field(default=False, metadata={
        "help": "Residual blocks inside the MLP (the peer extension's 'skip connection' networks)."})
    upsample: Optional[str] = field(default=None, metadata={
        "help": "How a residual block changes width: None (nearest interpolation) or 'Linear'."})
    seed: Optional[int] = field(default=None, metadata={
        "help": "Seed for the initial weights (a local generator; the global RNG is untouched). Empty: random."})
    info: Optional[str] = field(default=None, metadata={
        "help": "Free text stored in the file (webui's optional_info)."})

    # Files may carry values webui loads but we refuse to create (softmax activation, a last dropout
    # entry above 0); readers set lenient=True. Not part of the stored structure.
    lenient: bool = field(default=False, repr=False, compare=False, metadata={"internal": True})

    def __post_init__(self):
        self.sizes = _ints("sizes", self.sizes)
        self.layer_structure = _floats("layer_structure", self.layer_structure)
        ls = self.layer_structure
        if len(ls) < 2 or ls[0] != 1 or ls[-1] != 1:
            raise ConfigError(f"layer_structure: {excerpt(list(ls))} must start and end with 1 and have at least two "
                              "entries, e.g. 1, 2, 1")
        if any(not math.isfinite(v) or v <= 0 for v in ls):
            raise ConfigError(f"layer_structure: {excerpt(list(ls))} has a non-positive entry; every multiplier must "
                              "be > 0")
        if self.activation is not None and not isinstance(self.activation, str):
            raise ConfigError(f"activation: {excerpt(self.activation)} is not a name such as 'relu'")
        act = "linear" if self.activation in (None, "", "none") else self.activation.lower()
        allowed = ACTIVATIONS if self.lenient else CREATABLE_ACTIVATIONS
        if act not in allowed:
            extra = ""
            if act in ACTIVATIONS or act in REFUSED_ACTIVATIONS:
                extra = " (webui lists it, but it cannot work as a hypernetwork activation)"
            raise ConfigError(f"activation: {excerpt(self.activation)} is not usable{extra}; choose one of "
                              f"{', '.join(sorted(CREATABLE_ACTIVATIONS))}")
        self.activation = act
        if not isinstance(self.weight_init, str) or self.weight_init not in WEIGHT_INITS:
            raise ConfigError(f"weight_init: {excerpt(self.weight_init)} is unknown; choose one of "
                              f"{', '.join(WEIGHT_INITS)}")
        if isinstance(self.normal_std, bool) or not isinstance(self.normal_std, (int, float)) \
                or not math.isfinite(self.normal_std) or self.normal_std < 0:
            raise ConfigError(f"normal_std: {excerpt(self.normal_std)} must be a number >= 0")
        if self.upsample is False or (isinstance(self.upsample, str) and self.upsample in ("", "None", "none")):
            self.upsample = None
        if not (self.upsample is None or isinstance(self.upsample, str)) or self.upsample not in UPSAMPLE_MODES:
            raise ConfigError(f"upsample: {excerpt(self.upsample)} must be one of {list(UPSAMPLE_MODES)}")
        if not self.skip_connection:
            self.upsample = None  # only residual blocks change width; a plain MLP has nothing to upsample
        self.dropout_structure = self._check_dropout()
        self.use_dropout = bool(self.use_dropout) or any(self.dropout_structure)
        if self.seed is not None and self.seed != "":
            try:
                self.seed = int(self.seed)
            except (TypeError, ValueError, OverflowError):
                raise ConfigError(f"seed: {excerpt(self.seed)} must be a whole number or empty") from None
        else:
            self.seed = None
        if self.info is not None and not isinstance(self.info, str):
            raise ConfigError(f"info: {excerpt(self.info)} is not text")
        self._check_size()

    def parameter_count(self) -> int:
        """How many weights the network has, computed from the structure alone (nothing is allocated)."""
        return parameter_count(self.sizes, self.layer_structure, self.add_layer_norm,
                               self.skip_connection and self.upsample == "Linear")

    def _check_size(self) -> None:
        ls, sizes = self.layer_structure, self.sizes
        problem = None
        if len(sizes) > MAX_WIDTHS:
            problem = f"sizes: {len(sizes)} widths are more than {MAX_WIDTHS}"
        elif len(ls) > MAX_LAYERS:
            problem = f"layer_structure: {len(ls)} entries are more than {MAX_LAYERS}"
        elif max(sizes) > MAX_WIDTH:
            problem = f"sizes: width {excerpt(max(sizes), 30)} is wider than {MAX_WIDTH}"
        elif max(ls) > MAX_MULTIPLIER:
            problem = f"layer_structure: {max(ls):g} is larger than {MAX_MULTIPLIER}"
        countable = len(sizes) * len(ls) <= MAX_WIDTHS * MAX_LAYERS and max(sizes) <= 2 ** 40
        count = self.parameter_count() if countable else None
        if problem is None and count > MAX_PARAMETERS:
            problem = f"sizes {excerpt(list(sizes))} with layer_structure {excerpt(list(ls))}"
        if problem:
            need = "" if count is None else f"; the network would need {_amount(count)}"
            raise ConfigError(f"{problem}{need}, and at most {MAX_PARAMETERS:,} parameters are allowed. Choose "
                              "fewer or narrower widths, or smaller layer_structure entries")
        narrow = [w for w in sizes for m in ls if int(w * m) < 1]
        if narrow:
            raise ConfigError(f"layer_structure: {excerpt(list(ls))} makes a layer of width 0 for width "
                              f"{narrow[0]}; every layer needs at least one unit")

    def to_dict(self) -> dict:
        out = super().to_dict()
        out.pop("lenient")
        return out

    @classmethod
    def from_dict(cls, data: dict, lenient: bool = False) -> "NetworkConfig":
        """A config from ``to_dict`` output; ``lenient`` accepts what a loaded file may hold but a new network
        may not (a softmax activation, dropout after the output layer), so loaded configs round-trip."""
        names = {f.name for f in dataclasses.fields(cls)} - {"lenient"}
        return cls(**{k: v for k, v in data.items() if k in names}, lenient=lenient)

    def _check_dropout(self) -> Tuple[float, ...]:
        """The dropout applied after each layer; webui's rules fill it in when it is not given."""
        ls = self.layer_structure
        ds = self.dropout_structure
        if isinstance(ds, str):
            ds = ds.strip() or None
        if ds is not None and not isinstance(ds, (str, list, tuple)):
            raise ConfigError(f"dropout_structure: {excerpt(ds)} is not a list of probabilities such as 0, 0.1, 0")
        if ds is None or len(ds) == 0:
            derived = dropout_from_webui(ls, self.use_dropout, self.last_layer_dropout)
            if not self.lenient and derived[-1] != 0:  # (1, 1): webui's rule would drop out the output
                derived = derived[:-1] + (0.0,)
            return derived
        ds = _floats("dropout_structure", ds)
        if not self.use_dropout and not self.lenient:
            # webui's create tab ignores the structure when dropout is off (but a typo in it is still an error).
            return (0.0,) * len(ls)
        if len(ds) != len(ls):
            raise ConfigError(f"dropout_structure: {excerpt(list(ds))} has {len(ds)} entries but layer_structure "
                              f"{excerpt(list(ls))} has {len(ls)}; give one probability per layer")
        for p in ds:
            if not (0 <= p < 1):
                raise ConfigError(f"dropout_structure: {p} is not a probability in [0, 1)")
        if not self.lenient and (ds[0] != 0 or ds[-1] != 0):
            raise ConfigError(f"dropout_structure: {excerpt(list(ds))} must start and end with 0 (there is no dropout "
                              "on the input or after the output layer)")
        return ds

    def describe(self) -> str:
        """The structure in one line, as ``inspect`` shows it and errors about a file's weights quote it:
        '1, 2, 1; activation relu; init Normal; layer norm; dropout 0, 0.1, 0'."""
        parts = [", ".join(f"{x:g}" for x in self.layer_structure), f"activation {self.activation}",
                 f"init {self.weight_init}"]
        if self.add_layer_norm:
            parts.append("layer norm")
        if any(self.dropout_structure):
            parts.append("dropout " + ", ".join(f"{x:g}" for x in self.dropout_structure))
        if self.activate_output and self.activation != "linear" and not self.skip_connection:
            parts.append("activated output")
        if self.skip_connection:
            parts.append("skip connections" + (" (Linear upsample)" if self.upsample == "Linear" else ""))
        return "; ".join(parts)

    @property
    def webui_expressible(self) -> bool:
        """True when vanilla webui v1.10.1 builds exactly this module layout from a .pt file."""
        return not self.skip_connection

