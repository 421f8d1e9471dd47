"""The ``.safetensors`` format: tensors named ``{width}.{k|v}.{module state key}`` plus string metadata
(name, step, checkpoint, created, the whole NetworkConfig and the extra dict as JSON). Any structure can be
written. Describing a file reads its JSON header only.
"""
from __future__ import annotations

import json
import logging
import re
import struct
from pathlib import Path

from ..errors import FormatError, excerpt
from ..network import Hypernetwork
from .common import FORMAT_VERSION, SAFETENSORS, Decline, Parsed, Source, file_meta, make_config, plain

logger = logging.getLogger(__name__)

FORMAT_TAG = "hypernet_ext.hypernetwork"
TENSOR_NAME = re.compile(r"^(\d+)\.([kv])\.(.+)$")
_MAX_HEADER = 16 * 1024 * 1024  # safetensors allows 100 MB; a hypernetwork's header has a few KB


def _header(src: Source) -> dict:
    """The parsed JSON header (cached), or Decline when the file is not safetensors at all."""
    if "header" in src.cache:
        return src.cache["header"]
    if src.size < 10:
        raise Decline("too short for a safetensors header")
    (length,) = struct.unpack("<Q", src.head[:8])
    if not (2 <= length <= min(_MAX_HEADER, src.size - 8)) or src.head[8:9] != b"{":
        raise Decline("does not start with a safetensors JSON header")
    with open(src.path, "rb") as f:
        f.seek(8)
        raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as err:  # JSONDecodeError, bad UTF-8, numbers over 4300 digits
        raise FormatError(src.path, f"has a damaged safetensors header ({type(err).__name__}: {excerpt(str(err), 100)}"
                                    "); copy or download it again") from None
    if not isinstance(header, dict):
        raise FormatError(src.path, "has a safetensors header that is not a JSON object; the file is damaged")
    data_size = src.size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise FormatError(src.path, f"tensor {excerpt(name)} has no valid data_offsets; the file is damaged")
        if offsets[1] > data_size:
            raise FormatError(src.path, f"is truncated: tensor {excerpt(name)} ends at byte {offsets[1]} of the data, "
                                        f"which holds only {data_size}; copy or download it again")
    src.cache["header"] = header
    return header


def _widths(src: Source, header: dict) -> list:
    names = [n for n in header if n != "__metadata__"]
    if not names:
        raise Decline("holds no tensors")
    odd = [n for n in names if not TENSOR_NAME.match(n)]
    if odd:
        raise Decline(f"tensor names such as {excerpt(odd[0])} are not hypernetwork names ('{{width}}.k.*', "
                      "'{width}.v.*'); a Lora, embedding or checkpoint?")
    return list(dict.fromkeys(int(TENSOR_NAME.match(n).group(1)) for n in names))


def _json(src: Source, meta: dict, key: str, default):
    if key not in meta:
        return default
    try:
        return json.loads(meta[key])
    except (TypeError, ValueError, RecursionError):
        raise FormatError(src.path, f"its metadata {excerpt(key)} is not valid JSON; the file is damaged") from None


class SafetensorsReader:
    """Our safetensors layout; declines files whose tensors are not named by width."""
    name = "safetensors"
    format = SAFETENSORS

    def read(self, src: Source, tensors: bool) -> Parsed:
        header = _header(src)
        widths = _widths(src, header)
        meta = header.get("__metadata__") or {}
        if not isinstance(meta, dict) or "config" not in meta:
            raise FormatError(src.path, "has hypernetwork tensor names but no 'config' metadata, so its structure "
                                        "is unknown; it was not written by hypernet_ext")
        fields = _json(src, meta, "config", {})
        if not isinstance(fields, dict):
            raise FormatError(src.path, "its 'config' metadata is not a JSON object; the file is damaged")
        order = self._order(src, fields.get("sizes"), widths)
        fields = {k: v for k, v in fields.items() if k not in ("sizes", "lenient")}
        config = make_config(src.path, sizes=order, **fields)
        extra = _json(src, meta, "extra", {})
        parsed = Parsed(config, file_meta(src.path, meta.get("name"), meta.get("step"), meta.get("sd_checkpoint"),
                                          meta.get("sd_checkpoint_name"), meta.get("created"), extra,
                                          _json(src, meta, "format_version", None)))
        if tensors:
            parsed.states = self._states(src, order)
        return parsed

    @staticmethod
    def _order(src: Source, declared, widths: list) -> list:
        """The widths in the config's order, checked against the tensors present."""
        if declared is None:
            return widths
        try:
            order = [int(w) for w in declared]
        except (TypeError, ValueError):
            order = None
        if order is None or sorted(order) != sorted(widths):
            raise FormatError(src.path, f"its config names widths {excerpt(declared)} but it holds tensors for "
                                        f"{excerpt(widths)}; "
                                        "the file is damaged")
        return order

    @staticmethod
    def _states(src: Source, widths: list) -> dict:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            flat = load_file(str(src.path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise FormatError(src.path, f"its tensors cannot be read ({excerpt(str(err), 120)}); copy or download it "
                                        "again") from None
        states = {w: ({}, {}) for w in widths}
        for name, tensor in flat.items():
            width, which, key = TENSOR_NAME.match(name).groups()
            states[int(width)][0 if which == "k" else 1][key] = tensor
        return states


def write_safetensors(network: Hypernetwork, path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {}
    for width, k_module, v_module in network.pairs():
        for which, module in (("k", k_module), ("v", v_module)):
            for key, tensor in module.state_dict().items():
                tensors[f"{width}.{which}.{key}"] = tensor.detach().to("cpu").contiguous()
    meta = {"format": FORMAT_TAG, "format_version": str(FORMAT_VERSION), "name": str(network.name),
            "step": str(int(network.step)), "config": json.dumps(network.config.to_dict()),
            "extra": json.dumps(plain(network.extra))}
    for key in ("sd_checkpoint", "sd_checkpoint_name", "created"):
        value = getattr(network, key)
        if value is not None:
            meta[key] = str(value)
    save_file(tensors, str(path), metadata=meta)
