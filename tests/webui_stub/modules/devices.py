"""Stand-in for webui v1.10.1 modules/devices.py on a CPU with --precision full --no-half."""
import contextlib

import torch

cpu: torch.device = torch.device("cpu")
device: torch.device = torch.device("cpu")
dtype: torch.dtype = torch.float32
dtype_vae: torch.dtype = torch.float32
dtype_unet: torch.dtype = torch.float32
dtype_inference: torch.dtype = torch.float32
unet_needs_upcast = False


def autocast(disable=False):
    """No autocast for float32 (modules/devices.py: autocast returns a nullcontext when dtype is float32)."""
    return contextlib.nullcontext()


def without_autocast(disable=False):
    """(modules/devices.py: without_autocast)"""
    return contextlib.nullcontext()


def torch_gc():
    """(modules/devices.py: torch_gc) nothing to free on a CPU."""
