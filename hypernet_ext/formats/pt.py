"""The ``.pt`` layouts: webui's (every historical variant, loaded with webui's defaults for absent keys) and
the peer extension's beta one (``skip_connection``, ``upsample_linear``), read through torch_read (never torch.load),
and the writer that produces webui's exact layout (the peer's for skip-connection networks).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..errors import FormatError, excerpt
from ..layers import WEIGHT_INITS
from ..network import Hypernetwork
from . import safe_pickle, torch_read, torch_zip
from .common import FORMAT_VERSION, PEER_PT, WEBUI_PT, Decline, Parsed, Source, file_meta, make_config, plain

logger = logging.getLogger(__name__)

OURS = "hypernet_ext"  # our extras in a .pt: a dict of plain values that webui ignores
PEER_KEYS = ("skip_connection", "upsample_linear")
# webui's fix_old_state_dict: the first hypernetworks had two named Linear layers.
LEGACY_KEYS = {"linear1.weight": "linear.0.weight", "linear1.bias": "linear.0.bias",
               "linear2.weight": "linear.1.weight", "linear2.bias": "linear.1.bias"}
# Our config fields a webui file cannot hold (or holds lossily); kept in OURS and restored on load.
OUR_FIELDS = ("seed", "normal_std", "last_layer_dropout")


def _width_keys(tree: dict) -> list:
    return [k for k in tree if type(k) is int]  # webui tests type(size) == int (bool is not a width)


def _fix_legacy(state) -> dict:
    state = dict(state)
    for old, new in LEGACY_KEYS.items():
        if old in state and new not in state:
            state[new] = state.pop(old)
    return state


def _states(path: Path, tree: dict, widths: list) -> dict:
    states = {}
    for width in widths:
        pair = tree[width]
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(s, dict) for s in pair)):
            raise FormatError(path, f"the entry for width {width} is {safe_pickle.describe_tree(pair)}, not a "
                                    "(k, v) pair of state dicts; the file is damaged")
        states[width] = (_fix_legacy(pair[0]), _fix_legacy(pair[1]))
    return states


def _typed(path: Path, tree: dict, key: str, types, default=None):
    """``tree[key]`` when it is one of ``types`` (or absent: ``default``); FormatError naming the key otherwise."""
    value = tree.get(key, default)
    if value is not None and not isinstance(value, types):
        raise FormatError(path, f"its {key} is {excerpt(value)}, not {' or '.join(t.__name__ for t in types)}; the "
                                "file is damaged or was written by an incompatible tool")
    return value


def _config(path: Path, tree: dict, widths: list):
    """The structure, with webui v1.10.1's defaults for absent keys (Hypernetwork.load)."""
    ours = tree.get(OURS) if isinstance(tree.get(OURS), dict) else {}
    ours_config = ours.get("config") if isinstance(ours.get("config"), dict) else {}
    dropout = _typed(path, tree, "dropout_structure", (list, tuple))
    if dropout is not None and not all(isinstance(p, (int, float)) for p in dropout):
        raise FormatError(path, f"its dropout_structure {excerpt(dropout)} is not a list of numbers")
    use_dropout = bool(dropout is not None and any(dropout)) or bool(tree.get("use_dropout", False))
    weight_init = tree.get("weight_initialization", "Normal") or "Normal"
    if not isinstance(weight_init, str) or weight_init not in WEIGHT_INITS:  # used when creating; webui loads any
        logger.warning("%s: unknown weight initialization %s, recorded as Normal", path, excerpt(weight_init))
        weight_init = "Normal"
    layer_structure = tree.get("layer_structure")
    fields = dict(
        sizes=widths,
        layer_structure=[1, 2, 1] if layer_structure is None else layer_structure,
        activation=_typed(path, tree, "activation_func", (str,)),
        weight_init=weight_init,
        add_layer_norm=bool(tree.get("is_layer_norm", False)),
        use_dropout=use_dropout,
        dropout_structure=dropout,
        last_layer_dropout=bool(tree.get("last_layer_dropout", False)),
        activate_output=bool(tree.get("activate_output", True)),  # True when absent: webui's rule for old files
        skip_connection=bool(tree.get("skip_connection", False)),
        upsample="Linear" if tree.get("upsample_linear") == "Linear" else None,  # the peer's test, as written
        info=_typed(path, tree, "optional_info", (str,)),
    )
    fields.update({k: ours_config[k] for k in OUR_FIELDS if k in ours_config})
    return make_config(path, **fields), ours


class _PtReader:
    name = "?"
    format = "?"

    def claims(self, tree: dict) -> None:
        raise NotImplementedError

    def read(self, src: Source, tensors: bool) -> Parsed:
        tree = torch_read.scan(src)
        if not isinstance(tree, dict):
            raise Decline(f"holds {safe_pickle.describe_tree(tree)}, not webui's dict of widths")
        widths = _width_keys(tree)
        if not widths:
            keys = [repr(k) for k in list(tree)[:5]]
            raise Decline(f"a dict without width entries (keys {', '.join(keys) or 'none'}); webui stores one "
                          "entry per attention width, such as 768")
        self.claims(tree)
        config, ours = _config(src.path, tree, widths)
        meta = file_meta(src.path, tree.get("name"), tree.get("step"), tree.get("sd_checkpoint"),
                         tree.get("sd_checkpoint_name"), ours.get("created"), ours.get("extra"),
                         ours.get("format_version"))
        parsed = Parsed(config, meta)
        if tensors:
            full = torch_read.load_tensors(src)
            parsed.states = _states(src.path, full, widths)
        return parsed


class WebuiPtReader(_PtReader):
    """webui's layout, as its Hypernetwork.save writes it (and every older variant)."""
    name = "webui .pt"
    format = WEBUI_PT

    def claims(self, tree):
        if tree.get("skip_connection"):
            raise Decline("skip_connection is set: the peer extension's layout")


class PeerPtReader(_PtReader):
    """Hypernetwork-MonkeyPatch-Extension's beta layout: webui's plus skip_connection / upsample_linear."""
    name = "peer beta .pt"
    format = PEER_PT

    def claims(self, tree):
        # The peer writes both keys into every file; without skip connections its layout is webui's own.
        if not tree.get("skip_connection"):
            raise Decline("no skip connections: webui's layout" if any(k in tree for k in PEER_KEYS)
                          else "no skip_connection or upsample_linear entry")


def _cpu_state(module) -> dict:
    """The module's state dict with CPU tensors of a dtype webui's safe unpickler accepts."""
    state = module.state_dict()
    for key, tensor in state.items():
        tensor = tensor.detach().to("cpu")
        if tensor.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            tensor = tensor.float()
        state[key] = tensor.contiguous()
    return state


def pt_tree(network: Hypernetwork) -> dict:
    """The dict webui's Hypernetwork.save writes, plus the peer's keys for skip connections and our extras."""
    config = network.config
    tree = {int(width): (_cpu_state(k), _cpu_state(v)) for width, k, v in network.pairs()}
    dropout = [float(p) for p in config.dropout_structure]
    tree.update({
        "step": int(network.step),
        "name": str(network.name),
        "layer_structure": [float(x) for x in config.layer_structure],
        "activation_func": config.activation,
        "is_layer_norm": bool(config.add_layer_norm),
        "weight_initialization": config.weight_init,
        "sd_checkpoint": network.sd_checkpoint,
        "sd_checkpoint_name": network.sd_checkpoint_name,
        "activate_output": bool(config.activate_output),
        "use_dropout": bool(config.use_dropout),
        "dropout_structure": dropout,
        "last_layer_dropout": dropout[-2] != 0 if len(dropout) >= 2 else bool(config.last_layer_dropout),
        "optional_info": config.info or None,
    })
    if config.skip_connection:
        tree["skip_connection"] = True
        tree["upsample_linear"] = config.upsample
    tree[OURS] = plain({"format_version": FORMAT_VERSION, "created": network.created,
                        "config": config.to_dict(), "extra": network.extra})
    return tree


INEXPRESSIBLE = ("it has skip connections, which webui's .pt layout cannot express, so it is written in the peer "
                 "extension's layout: vanilla webui cannot load it (hypernet_ext and "
                 "Hypernetwork-MonkeyPatch-Extension can). Save as .safetensors to share it without that caveat")


def write_pt(network: Hypernetwork, path: Path) -> None:
    """Write ``network`` to ``path`` (callers warn with INEXPRESSIBLE when it is not webui-expressible)."""
    torch_zip.save_webui_safe(pt_tree(network), path)
