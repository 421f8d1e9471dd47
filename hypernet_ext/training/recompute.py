"""Gradient checkpointing for a frozen UNet: its residual and transformer blocks recompute in the backward pass.

Blocks are found by class name (ldm/sgm, diffusers), so no host code is imported. Each gets an instance-level
forward running the class's forward through non-reentrant torch.utils.checkpoint (which works when no input
needs grad, as with a frozen base); the handle's ``remove()`` deletes every wrapper and leaves nothing behind.
"""
from __future__ import annotations

import logging
from typing import List, Tuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

logger = logging.getLogger(__name__)

BLOCK_CLASSES = ("ResBlock", "SpatialTransformer", "SpatialVideoTransformer", "ResnetBlock2D",
                 "Transformer2DModel")
_MISSING = object()


class _Recompute:
    """The wrapper put on one block: checkpoint the original forward while gradients are being recorded."""

    def __init__(self, module: nn.Module, previous):
        self.forward = previous if previous is not _MISSING else type(module).forward.__get__(module)
        self.previous = previous

    def __call__(self, *args, **kwargs):
        if torch.is_grad_enabled():
            return checkpoint(self.forward, *args, use_reentrant=False, **kwargs)
        return self.forward(*args, **kwargs)


class CheckpointingHandle:
    """Owns the wrappers; ``remove()`` (or leaving a ``with`` block) restores every block's forward."""

    def __init__(self, wrapped: List[Tuple[nn.Module, _Recompute]]):
        self._wrapped = wrapped

    @property
    def blocks(self) -> int:
        return len(self._wrapped)

    def remove(self) -> None:
        wrapped, self._wrapped = self._wrapped, []
        for module, wrapper in wrapped:
            if module.__dict__.get("forward") is not wrapper:
                logger.warning("the forward of %s was replaced by someone else while checkpointing was on; "
                               "leaving theirs in place", type(module).__name__)
                continue
            del module.__dict__["forward"]
            if wrapper.previous is not _MISSING:
                module.__dict__["forward"] = wrapper.previous

    def __enter__(self) -> "CheckpointingHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def find_blocks(root: nn.Module, classes=BLOCK_CLASSES) -> List[nn.Module]:
    """The outermost modules under ``root`` whose class name is in ``classes`` (no block inside another)."""
    found, names = [], []
    for name, module in root.named_modules():
        if type(module).__name__ in classes and not any(name.startswith(n + ".") for n in names):
            found.append(module)
            names.append(name)
    return found


def enable_gradient_checkpointing(root: nn.Module, classes=BLOCK_CLASSES) -> CheckpointingHandle:
    """Wrap the blocks of ``root`` (the UNet); see the module docstring. Remove with the returned handle."""
    blocks = find_blocks(root, classes)
    if not blocks:
        logger.warning("gradient checkpointing: no %s blocks under %s; nothing is recomputed",
                       "/".join(classes), type(root).__name__)
    wrapped = []
    for module in blocks:
        wrapper = _Recompute(module, module.__dict__.get("forward", _MISSING))
        module.__dict__["forward"] = wrapper
        wrapped.append((module, wrapper))
    logger.debug("gradient checkpointing on %d blocks", len(wrapped))
    return CheckpointingHandle(wrapped)
