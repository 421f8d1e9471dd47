"""HostModel for an ldm ``LatentDiffusion`` (SD1 eps-prediction, SD2 eps or v-prediction).

``LdmHost(model)`` gives the trainer what it needs (VAE moments, prompt conditioning, UNet prediction, noise
schedule) plus ``decode_latents`` for previews. ``load_ldm_checkpoint(ckpt, config_yaml)`` loads one from disk
through hypernet_ext.standalone.checkpoints.
"""
from __future__ import annotations

import logging
from typing import Any, List, Optional

import torch
from torch import nn

from ..errors import ConfigError

logger = logging.getLogger(__name__)


class UnetOf:
    """The UNet of an ldm or sgm model held as ``self.model`` (both keep it at ``model.model.diffusion_model``),
    and its device and dtype."""

    @property
    def unet(self) -> nn.Module:
        return self.model.model.diffusion_model

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype


class LdmHost(UnetOf):
    """Wraps a LatentDiffusion; the UNet is ``model.model.diffusion_model``. Follows hypernet_ext.host.HostModel."""

    def __init__(self, model: nn.Module, model_name: Optional[str] = None, model_hash: Optional[str] = None):
        for attribute in ("apply_model", "encode_first_stage", "decode_first_stage", "alphas_cumprod"):
            if not hasattr(model, attribute):
                raise ConfigError(f"LdmHost: {type(model).__name__} has no {attribute}; pass an ldm LatentDiffusion")
        self.model = model
        self.model_name = model_name
        self.model_hash = model_hash
        self.parameterization = str(getattr(model, "parameterization", "eps"))
        if self.parameterization not in ("eps", "v"):
            raise ConfigError(f"LdmHost: parameterization {self.parameterization!r} cannot be trained; eps and v can")
        self.scale_factor = float(model.scale_factor)

    # ---- HostModel ----

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self.model.alphas_cumprod.detach().float().cpu()

    def to(self, device) -> "LdmHost":
        """Move the model; the CLIP embedder's token device follows (ldm keeps it as a plain attribute)."""
        self.model.to(device)
        cond = getattr(self.model, "cond_stage_model", None)
        if cond is not None and isinstance(getattr(cond, "device", None), (str, torch.device)):
            cond.device = str(torch.device(device))
        return self

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """VAE moments cat(mean, logvar) (B, 2C, h, w) of pixels in [-1, 1]."""
        vae = self.model.first_stage_model
        dtype = next(vae.parameters()).dtype
        posterior = self.model.encode_first_stage(pixels.to(self.device, dtype))
        if hasattr(posterior, "mean") and hasattr(posterior, "logvar"):
            return torch.cat([posterior.mean, posterior.logvar], dim=1).float()
        if isinstance(posterior, torch.Tensor):   # a deterministic first stage: no spread
            return torch.cat([posterior, torch.full_like(posterior, -30.0)], dim=1).float()
        raise ConfigError(f"LdmHost: the first stage returned {type(posterior).__name__}, not a distribution")

    @torch.no_grad()
    def encode_prompts(self, prompts: List[str]) -> Any:
        if hasattr(self.model, "get_learned_conditioning"):
            return self.model.get_learned_conditioning(list(prompts))
        return self.model.cond_stage_model(list(prompts))

    def predict(self, x_noisy: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        """The UNet's output; inputs are cast to its device and dtype (fp16 UNets take fp32 latents)."""
        dtype = self.dtype
        x_noisy = x_noisy.to(self.device, dtype)
        if isinstance(cond, torch.Tensor):
            cond = cond.to(self.device, dtype)
        return self.model.apply_model(x_noisy, t.to(self.device), cond)

    def attention_root(self) -> nn.Module:
        return self.unet

    def freeze(self) -> None:
        """No gradients for any base weight, and eval mode (no dropout in the UNet, as in webui).

        ldm's ``use_checkpoint`` flags are left alone: the trainer turns them off for the run, with an undo
        (hypernet_ext.training.recompute.disable_builtin_checkpointing).
        """
        self.model.eval()
        for param in self.model.parameters():
            param.requires_grad_(False)

    # ---- beyond the protocol ----

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] (float32, CPU) for scaled latents."""
        vae = self.model.first_stage_model
        dtype = next(vae.parameters()).dtype
        return self.model.decode_first_stage(latents.to(self.device, dtype)).float().cpu().clamp(-1, 1)

    @property
    def model_id(self) -> str:
        """Names the encoder in latent-cache keys."""
        return self.model_hash or self.model_name or type(self.model).__name__



def load_ldm_checkpoint(ckpt, config_yaml, device="cpu", half: bool = False) -> LdmHost:
    """An LdmHost for a Stable Diffusion 1.x/2.x checkpoint and its ldm yaml (see checkpoints.load_checkpoint)."""
    from .checkpoints import load_checkpoint

    host = load_checkpoint(ckpt, config_yaml, device=device, half=half)
    if not isinstance(host, LdmHost):
        raise ConfigError(f"{config_yaml} describes an sgm model (SDXL), not an ldm one")
    return host
