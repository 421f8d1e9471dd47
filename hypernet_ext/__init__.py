"""hypernet_ext: create, train, load, save and attach hypernetworks for Stable Diffusion.

Public API (stable): ``load``, ``save``, ``describe``, ``Hypernetwork``, ``NetworkConfig``, ``create``,
``attach``. Names resolve lazily, so importing the package does no work and imports no host code.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Hypernetwork": "hypernet_ext.network",
    "NetworkConfig": "hypernet_ext.config",
    "load": "hypernet_ext.formats",
    "save": "hypernet_ext.formats",
    "describe": "hypernet_ext.formats",
    "attach": "hypernet_ext.attach",
    "AttachHandle": "hypernet_ext.attach",
    "HypernetError": "hypernet_ext.errors",
}
__all__ = sorted(_EXPORTS) + ["create"]


def create(config=None, name: str = "hypernetwork", **fields):
    """A new hypernetwork from a NetworkConfig (and/or its fields as keyword arguments)."""
    from .network import Hypernetwork

    return Hypernetwork.create(config, name=name, **fields)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hypernet_ext' has no attribute {name!r}")
