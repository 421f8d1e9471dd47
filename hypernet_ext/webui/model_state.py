"""What a training run may change on webui's model, captured before the run and put back after it.

``capture`` records gradients on/off, train/eval mode, hooks, instance forwards, ldm's checkpoint flags, the
attention forward webui's optimization installed, and where the VAE, text encoder and UNet sit; ``restore``
puts back what a run changes on purpose (gradients, modes, placement); ``differences`` names anything else that
differs, which the run reports and the tests assert is nothing.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

logger = logging.getLogger(__name__)

FLAGS = ("checkpoint", "use_checkpoint")
PARTS = ("model", "first_stage_model", "cond_stage_model")   # the UNet wrapper, the VAE, the text encoder


def _device(module) -> Optional[torch.device]:
    param = next(module.parameters(), None) if isinstance(module, nn.Module) else None
    return param.device if param is not None else None


@dataclass
class ModelState:
    """A snapshot of the model (see the module docstring); compare two with ``differences``."""
    requires_grad: List[Tuple[str, nn.Parameter, bool]] = field(default_factory=list)
    training: List[Tuple[str, nn.Module, bool]] = field(default_factory=list)
    hooks: Dict[str, tuple] = field(default_factory=dict)
    flags: Dict[Tuple[str, str], object] = field(default_factory=dict)
    attention: tuple = ()
    placement: Dict[str, Optional[torch.device]] = field(default_factory=dict)
    model: Optional[nn.Module] = None


def _attention_forward(model: nn.Module) -> tuple:
    """The optimization webui selected and the class-level forward of the first attention module."""
    try:
        from modules import sd_hijack

        current = getattr(sd_hijack, "current_optimizer", None)
    except ImportError:
        current = None
    name = getattr(current, "name", None)
    for module in model.modules():
        if all(isinstance(getattr(module, layer, None), nn.Module) for layer in ("to_k", "to_v")):
            return name, type(module).forward
    return name, None


def capture(sd_model: nn.Module) -> ModelState:
    state = ModelState(model=sd_model)
    for name, param in sd_model.named_parameters():
        state.requires_grad.append((name, param, param.requires_grad))
    for name, module in sd_model.named_modules():
        state.training.append((name, module, module.training))
        state.hooks[name] = (tuple(module._forward_pre_hooks), tuple(module._forward_hooks),
                             tuple(module._backward_hooks), module.__dict__.get("forward"))
        for flag in FLAGS:
            if flag in module.__dict__:
                state.flags[(name, flag)] = module.__dict__[flag]
    state.attention = _attention_forward(sd_model)
    for part in PARTS:
        state.placement[part] = _device(getattr(sd_model, part, None))
    return state


def restore(state: ModelState) -> None:
    """Put back gradients, train/eval modes and where the parts sit (the run changes these on purpose)."""
    for _, param, requires_grad in state.requires_grad:
        if param.requires_grad != requires_grad:
            param.requires_grad_(requires_grad)
    for _, module, training in state.training:
        module.training = training
    for part, device in state.placement.items():
        module = getattr(state.model, part, None)
        if device is not None and _device(module) != device:
            module.to(device)


def differences(before: ModelState, after: ModelState) -> List[str]:
    """What differs between two snapshots of the same model, one line each (empty: nothing)."""
    out = []
    grads = {name: flag for name, _, flag in after.requires_grad}
    out += [f"{name}.requires_grad {flag} -> {grads.get(name)}" for name, _, flag in before.requires_grad
            if grads.get(name) != flag]
    modes = {name: flag for name, _, flag in after.training}
    out += [f"{name or 'model'}.training {flag} -> {modes.get(name)}" for name, _, flag in before.training
            if modes.get(name) != flag]
    for name in sorted(set(before.hooks) | set(after.hooks)):
        if before.hooks.get(name) != after.hooks.get(name):
            out.append(f"{name or 'model'}: hooks or forward changed")
    for key in sorted(set(before.flags) | set(after.flags)):
        if before.flags.get(key) != after.flags.get(key):
            out.append(f"{key[0]}.{key[1]} {before.flags.get(key)!r} -> {after.flags.get(key)!r}")
    if before.attention != after.attention:
        out.append(f"attention optimization {before.attention[0]!r} -> {after.attention[0]!r} (or its forward)")
    for part in PARTS:
        if before.placement.get(part) != after.placement.get(part):
            out.append(f"{part} on {before.placement.get(part)} -> {after.placement.get(part)}")
    return out
