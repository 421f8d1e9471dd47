"""NetworkFile: what a hypernetwork file holds (structure, metadata, size, format, hash), read without
loading its tensors, so listing a folder of networks stays cheap. The hash is computed on first use.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from ..config import NetworkConfig
from ..fileio import sha256_file
from .common import WEBUI_PT


@dataclass
class NetworkFile:
    """One hypernetwork file on disk. ``format`` is 'webui-pt', 'peer-pt' or 'safetensors'."""

    path: str
    size: int
    format: str
    name: str
    widths: Tuple[int, ...]
    config: NetworkConfig
    metadata: Dict[str, object] = field(default_factory=dict)  # name, step, checkpoint, created, config, extra
    step: int = 0
    sd_checkpoint: Optional[str] = None
    sd_checkpoint_name: Optional[str] = None
    created: Optional[str] = None
    mtime: float = 0.0

    @functools.cached_property
    def hash(self) -> str:
        """Full hex SHA-256 of the file (what webui's hashes.sha256 computes); read on first use."""
        return sha256_file(self.path)

    @property
    def short_hash(self) -> str:
        """First 10 hex digits of ``hash``: what webui shows and stores in ``.optim`` files."""
        return self.hash[:10]

    @property
    def webui_loadable(self) -> bool:
        """True when vanilla webui v1.10.1 loads this file as it is."""
        return self.format == WEBUI_PT

    def load(self, map_location="cpu"):
        """The Hypernetwork this file holds (see hypernet_ext.formats.load)."""
        from . import load

        return load(self.path, map_location=map_location)

    def to_dict(self, with_hash: bool = True) -> dict:
        """Plain JSON values (the hash is computed unless ``with_hash`` is False)."""
        out = {"path": self.path, "size": self.size, "format": self.format, "name": self.name,
               "widths": list(self.widths), "step": self.step, "sd_checkpoint": self.sd_checkpoint,
               "sd_checkpoint_name": self.sd_checkpoint_name, "created": self.created, "mtime": self.mtime,
               "config": self.config.to_dict(), "extra": self.metadata.get("extra", {}),
               "webui_loadable": self.webui_loadable}
        if with_hash:
            out["hash"] = self.hash
            out["short_hash"] = self.short_hash
        return out
