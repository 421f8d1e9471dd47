"""What every reader and writer shares: the file being read (Source), a reader's answer (Parsed), the way a
reader declines a file that is not its own (Decline), and building a Hypernetwork from parsed weights with
errors that say which width, which key and which shape did not fit.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from ..config import NetworkConfig
from ..errors import ConfigError, FormatError, excerpt
from ..network import Hypernetwork

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1  # of what we add to files (the 'hypernet_ext' entry of .pt, the metadata of .safetensors)
WEBUI_PT = "webui-pt"  # webui's layout: vanilla webui v1.10.1 loads it
PEER_PT = "peer-pt"  # Hypernetwork-MonkeyPatch-Extension's beta layout (skip_connection, upsample_linear)
SAFETENSORS = "safetensors"

StatePair = Tuple[Dict[str, object], Dict[str, object]]


class Decline(Exception):
    """A reader's way of saying 'not mine'; the message (why) ends up in the error that lists what was tried."""


@dataclasses.dataclass
class Parsed:
    """What a reader found: the structure, the metadata, and (when asked for) the weights per width."""
    config: NetworkConfig
    meta: dict  # name, step, sd_checkpoint, sd_checkpoint_name, created, extra, format_version
    states: Optional[Dict[int, StatePair]] = None


class Source:
    """One file being read: its size and first bytes, plus caches that readers of the same file share."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            raise FormatError(self.path, "no such file; check the path") from None
        except OSError as err:
            raise FormatError(self.path, f"cannot be read ({err.strerror or err})") from None
        if not self.path.is_file():
            raise FormatError(self.path, "is not a file; give the path of a .pt or .safetensors file")
        self.size = stat.st_size
        self.mtime = stat.st_mtime
        with open(self.path, "rb") as f:
            self.head = f.read(16)
        self.cache: dict = {}


def plain(value):
    """``value`` as plain JSON types (dict/list/str/int/float/bool/None); other objects become strings."""
    return json.loads(json.dumps(value, default=str))


def file_meta(path: Path, name=None, step=None, sd_checkpoint=None, sd_checkpoint_name=None, created=None,
              extra=None, format_version=None) -> dict:
    """The metadata dict every reader returns, with webui's defaults (name: the file's stem, step 0)."""
    try:
        step = int(step or 0)
    except (TypeError, ValueError, OverflowError):
        raise FormatError(path, f"step {excerpt(step)} is not a whole number; the file is damaged") from None
    return {
        "name": str(name) if name not in (None, "") else path.stem,
        "step": step,
        "sd_checkpoint": None if sd_checkpoint is None else str(sd_checkpoint),
        "sd_checkpoint_name": None if sd_checkpoint_name is None else str(sd_checkpoint_name),
        "created": None if created is None else str(created),
        "extra": dict(extra) if isinstance(extra, dict) else {},
        "format_version": format_version,
    }


def make_config(path: Path, **fields) -> NetworkConfig:
    """A lenient NetworkConfig (values webui loads are accepted); a bad value is a FormatError on the file.
    Fields this version does not know (from a newer writer) are ignored, as ``from_dict`` does."""
    known = {f.name for f in dataclasses.fields(NetworkConfig)}
    try:
        return NetworkConfig(**{k: v for k, v in fields.items() if k in known}, lenient=True)
    except ConfigError as err:
        raise FormatError(path, f"its structure cannot be built ({err}); the file is damaged or was written by "
                                "an incompatible tool") from None


def check_state(path: Path, width: int, which: str, module: torch.nn.Module, state: dict,
                config: NetworkConfig) -> None:
    """Raise FormatError unless ``state`` has exactly the keys and shapes ``module`` needs."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    bad_type = [k for k in state if k in expected and not isinstance(state[k], torch.Tensor)]
    wrong = [f"{k} is {tuple(state[k].shape)}, expected {tuple(expected[k].shape)}" for k in expected
             if k in state and k not in bad_type and tuple(state[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or bad_type or wrong):
        return
    details = []
    if wrong:
        details.append("shapes differ: " + "; ".join(wrong[:4]))
    if missing:
        details.append(f"missing keys {missing[:6]}")
    if unexpected:
        details.append(f"unexpected keys {excerpt(unexpected)}")
    if bad_type:
        details.append(f"not tensors: {excerpt(bad_type)}")
    raise FormatError(path, f"the weights for width {width} ({which}) do not fit the structure the file declares "
                            f"({config.describe()}): {', '.join(details)}. The file is damaged, "
                            "or its settings were edited without its weights")


def _stored_values(states: dict) -> int:
    """Values held by the distinct storages behind the tensors in ``states`` (views of one storage count once)."""
    storages = {}
    for pair in states.values():
        for state in pair:
            for tensor in state.values():
                if isinstance(tensor, torch.Tensor) and tensor.numel():
                    storage = tensor.untyped_storage()
                    storages[storage.data_ptr()] = storage.nbytes() // tensor.element_size()
    return sum(storages.values())


def build_network(path: Path, parsed: Parsed) -> Hypernetwork:
    """A Hypernetwork with the parsed structure, weights and metadata (on the CPU, in eval mode).

    Nothing is allocated before the declared structure has been checked against the stored tensors: the
    network is first built on the meta device (shapes only), so a file cannot make the loader build a network
    larger than the weights it holds. Non-finite weights load with a warning."""
    config, meta = parsed.config, parsed.meta
    missing = [w for w in config.sizes if w not in parsed.states]
    if missing:
        raise FormatError(path, f"no weights for width {missing[0]}")
    try:
        with torch.device("meta"):
            network = Hypernetwork(config, name=meta["name"], init=False)
    except ConfigError as err:
        raise FormatError(path, f"its structure cannot be built ({err})") from None
    for width, k_module, v_module in network.pairs():
        k_state, v_state = parsed.states[width]
        check_state(path, width, "k", k_module, k_state, config)
        check_state(path, width, "v", v_module, v_state, config)
    declared, stored = config.parameter_count(), _stored_values(parsed.states)
    if declared > stored:   # the shapes fit, but through views that reuse the same stored values
        raise FormatError(path, f"declares a network of {declared:,} weights but holds only {stored:,} stored values "
                                "(its tensors share storage); the file is damaged or crafted")
    network.to_empty(device="cpu")
    for width, k_module, v_module in network.pairs():
        with torch.no_grad():
            k_module.load_state_dict(parsed.states[width][0], strict=True)
            v_module.load_state_dict(parsed.states[width][1], strict=True)
    network.step = meta["step"]
    network.sd_checkpoint = meta["sd_checkpoint"]
    network.sd_checkpoint_name = meta["sd_checkpoint_name"]
    network.created = meta["created"]
    network.extra = dict(meta["extra"])
    network.eval()
    network.requires_grad_(False)  # as webui's loader: inference builds no autograd graph; the trainer turns it on
    bad = nonfinite_weights(network)
    if bad:
        logger.warning("%s: %d weight tensors hold NaN or infinite values (%s); its outputs will be NaN. Do not "
                       "train from it; use an earlier checkpoint", path, len(bad), "; ".join(bad[:4]))
    return network


def nonfinite_weights(network: Hypernetwork) -> List[str]:
    """Where ``network`` holds NaN or infinite weights: 'width 768 (k) linear.0.weight: 3 of 1536 values'."""
    found = []
    for width, k_module, v_module in network.pairs():
        for which, module in (("k", k_module), ("v", v_module)):
            for key, tensor in module.state_dict().items():
                if tensor.is_floating_point():
                    bad = int((~torch.isfinite(tensor)).sum())
                    if bad:
                        found.append(f"width {width} ({which}) {key}: {bad} of {tensor.numel()} values")
    return found


def move(network: Hypernetwork, device) -> Hypernetwork:
    """Move a freshly loaded network to ``device`` (checked by devices.check_device)."""
    return network if device.type == "cpu" else network.to(device)
