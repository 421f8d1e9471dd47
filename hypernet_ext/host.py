"""The protocols between the trainer and whatever runs the diffusion model.

HostModel wraps a model (ldm LatentDiffusion standalone, webui's sd_model inside webui, sgm for SDXL);
Callbacks carries progress, previews, validation results, guard actions and stop requests to the caller.
The trainer uses nothing else.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class HostModel(Protocol):
    """What the trainer needs from a diffusion model. Conditioning is opaque: whatever predict() accepts."""

    device: torch.device
    dtype: torch.dtype              # compute dtype of the UNet
    parameterization: str           # "eps" or "v"
    alphas_cumprod: torch.Tensor    # (T,) float on CPU
    scale_factor: float             # latent = scale_factor * VAE sample

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """VAE moments (B, 2C, h, w) = cat(mean, logvar) for pixels (B, 3, H, W) in [-1, 1]."""

    def encode_prompts(self, prompts: List[str]) -> Any:
        """Conditioning for a batch of prompts (a tensor for SD1/SD2, a dict for SDXL)."""

    def predict(self, x_noisy: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        """The UNet's output in its parameterization (noise for eps, velocity for v)."""

    def attention_root(self) -> nn.Module:
        """The module holding the attention layers hypernetworks attach to (the UNet)."""

    def freeze(self) -> None:
        """Turn off gradients for every weight of the base model. Nothing else: what must be undone after a run
        (ldm's own checkpointing flags, our hooks) is changed by the trainer through handles."""


class Callbacks:
    """Default callbacks: do nothing, never stop. Subclass and override what you need; methods added later
    keep doing nothing by default, so older subclasses go on working."""

    def on_progress(self, step: int, total: int, loss: Optional[float], lr: float, eta_s: Optional[float]) -> None:
        pass

    def on_checkpoint(self, path: str, step: int) -> None:
        pass

    def on_preview(self, step: int, network) -> None:
        pass

    def on_message(self, text: str) -> None:
        pass

    def on_validation(self, step: int, val_loss: float, effect: Dict[int, float],
                      weight_norm: Dict[int, float]) -> None:
        """A validation result: the loss and, per attention width, the effect size (mean |f(x)| / |x|) and
        the weight norm. Step 0 (or the first step of a continued run) is the baseline before training."""

    def on_guard(self, step: int, action: str, reason: str, text: str) -> None:
        """The overtraining guard acted at ``step``: ``action`` (warn, lower-lr, rollback, stop) for
        ``reason`` (validation, effect, diverging); ``text`` is the message (also sent to on_message)."""

    def should_stop(self) -> bool:
        return False
