"""Devices named by users (a command-line option, ``map_location``): parsed and checked against this machine
before any work starts, so a typo or a missing GPU is one clear error instead of a traceback after minutes.
"""
from __future__ import annotations

import torch

from .errors import ConfigError, excerpt

HINT = "use cpu, cuda, cuda:N or mps"


def check_device(value, what: str = "device") -> torch.device:
    """``value`` (a name such as 'cuda:0', or a torch.device) as a device this machine has; ConfigError naming
    ``what`` otherwise. Checks availability without initialising CUDA."""
    if isinstance(value, torch.device):
        device = value
    elif isinstance(value, str) and value.strip():
        try:
            device = torch.device(value.strip())
        except (RuntimeError, ValueError):
            raise ConfigError(f"{what}: {excerpt(value)} is not a device; {HINT}") from None
    else:
        raise ConfigError(f"{what}: {excerpt(value)} is not a device; {HINT}")
    name = str(device)
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch has no CUDA support" if not torch.backends.cuda.is_built() else "no GPU is visible"
            raise ConfigError(f"{what}: {name} asks for a CUDA GPU, but {why}; use cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{what}: {name} does not exist: this machine has {count} CUDA GPU"
                              f"{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1})")
        return device
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"{what}: {name} asks for Apple's MPS, which this machine does not have; use cpu")
        return device
    if device.type == "meta":
        raise ConfigError(f"{what}: {name} holds no data; {HINT}")
    try:  # other backends (xpu, ...): a zero-size tensor tells whether this machine has one
        torch.empty(0, device=device)
    except RuntimeError:
        raise ConfigError(f"{what}: {name} is not usable on this machine; {HINT}") from None
    return device
