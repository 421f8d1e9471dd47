"""WebuiHost: the trainer's HostModel over webui's loaded model (``shared.sd_model``).

Images go through webui's VAE (``encode_first_stage``, on webui's device in ``devices.dtype_vae``), prompts
through webui's own conditioning (``get_learned_conditioning``: emphasis, embeddings, chunks past 75 tokens),
predictions through ``apply_model`` (webui's hijack casts to ``devices.dtype_unet`` under ``devices.autocast``).
The model family picks a small ``Parts`` object: SD1 and SD2 are ldm ``LatentDiffusion``; SDXL is sgm's
``DiffusionEngine`` (sd_models_xl.py): its conditioning is a dict (``crossattn``, ``vector``) whose size part is
made for each image (original size, crop, target size from its bucket, hypernet_ext.sdxl), its VAE is read for
its posterior, and its text encoders are the conditioner's.
"""
from __future__ import annotations

import logging
from typing import Any, List

import torch
from torch import nn

from ..errors import ConfigError
from ..sdxl import AESTHETIC_SCORE, SizeConditioner, vae_moments

logger = logging.getLogger(__name__)


class NotSupported(ConfigError):
    """webui runs in a mode, or has a model loaded, that hypernet_ext cannot train on (the REST API answers 409)."""


def model_family(sd_model) -> str:
    """'sd1', 'sd2', 'sdxl', 'sd3' or 'other', from the flags webui sets on the model (sd_models_types.py)."""
    for flag, family in (("is_sdxl", "sdxl"), ("is_sd3", "sd3"), ("is_sd2", "sd2"), ("is_sd1", "sd1")):
        if getattr(sd_model, flag, False):
            return family
    return "other"


class LdmParts:
    """SD1/SD2: an ldm LatentDiffusion; the UNet is ``model.model.diffusion_model``, conditioning a tensor."""

    def __init__(self, sd_model):
        for attribute in ("apply_model", "encode_first_stage", "get_learned_conditioning", "alphas_cumprod"):
            if not hasattr(sd_model, attribute):
                raise ConfigError(f"the loaded model ({type(sd_model).__name__}) has no {attribute}; hypernet_ext "
                                  "trains SD1 and SD2 models (ldm LatentDiffusion)")
        self.model = sd_model

    def unet(self) -> nn.Module:
        return self.model.model.diffusion_model

    def encode_prompts(self, prompts: List[str]) -> Any:
        return self.model.get_learned_conditioning(list(prompts))

    def text_encoder(self) -> nn.Module:
        return self.model.cond_stage_model

    def moments(self, pixels: torch.Tensor, devices) -> torch.Tensor:
        with devices.autocast():
            posterior = self.model.encode_first_stage(pixels.to(devices.device, devices.dtype_vae))
        if hasattr(posterior, "mean") and hasattr(posterior, "logvar"):
            return torch.cat([posterior.mean, posterior.logvar], dim=1).float()
        if isinstance(posterior, torch.Tensor):
            return torch.cat([posterior, torch.full_like(posterior, -30.0)], dim=1).float()
        raise ConfigError(f"the model's first stage returned {type(posterior).__name__}, not a distribution")

    def size_conditioning(self, cond, sizes):
        return cond


class SgmParts(LdmParts):
    """SDXL: an sgm DiffusionEngine (webui gives it get_learned_conditioning, apply_model, alphas_cumprod and
    parameterization in sd_models_xl.py); the text encoders are ``conditioner``'s embedders."""

    def __init__(self, sd_model):
        for attribute in ("apply_model", "get_learned_conditioning", "alphas_cumprod", "conditioner",
                          "first_stage_model"):
            if not hasattr(sd_model, attribute):
                raise ConfigError(f"the loaded SDXL model ({type(sd_model).__name__}) has no {attribute}")
        self.model = sd_model
        from modules import shared

        score = getattr(shared.opts, "sdxl_refiner_high_aesthetic_score", AESTHETIC_SCORE)
        self.sizes = SizeConditioner(sd_model.conditioner, {"aesthetic_score": score})

    def text_encoder(self) -> nn.Module:
        return self.model.conditioner

    def moments(self, pixels: torch.Tensor, devices) -> torch.Tensor:
        """The posterior, where webui's encode_first_stage (sgm's) would give a scaled sample; autocast as sgm
        runs its first stage (off for SDXL: its VAE overflows in fp16)."""
        vae = self.model.first_stage_model
        context = devices.without_autocast() if getattr(self.model, "disable_first_stage_autocast", False) \
            else devices.autocast()
        with context:
            moments = vae_moments(vae, pixels.to(devices.device, devices.dtype_vae))
        dtype = next(vae.parameters()).dtype
        if torch.isfinite(moments).all() or dtype == torch.float32:
            return moments
        # SDXL's original VAE overflows in float16 (webui's --no-half-vae, or its automatic upcast when decoding)
        logger.warning("the VAE gave NaN in %s; encoding these images in float32", dtype)
        vae.float()
        try:
            with devices.without_autocast():
                return vae_moments(vae, pixels.to(devices.device, torch.float32))
        finally:
            vae.to(dtype)

    def size_conditioning(self, cond, sizes):
        return self.sizes(cond, sizes)


PARTS = {"sd1": LdmParts, "sd2": LdmParts, "sdxl": SgmParts}


class WebuiHost:
    """HostModel (hypernet_ext.host) over webui's ``sd_model``."""

    def __init__(self, sd_model):
        from modules import devices, sd_vae

        family = model_family(sd_model)
        if family not in PARTS:
            raise NotSupported(f"the loaded model is {family.upper()}; hypernet_ext trains on SD1, SD2 and SDXL "
                              "models. Load one of those to train")
        self.model = sd_model
        self.family = family
        self.parts = PARTS[family](sd_model)
        self.devices = devices
        self.sd_vae = sd_vae
        self.parameterization = str(getattr(sd_model, "parameterization", "eps"))
        if self.parameterization not in ("eps", "v"):
            raise ConfigError(f"the loaded model predicts {self.parameterization!r}; hypernet_ext trains eps and v "
                              "models")
        self.scale_factor = float(sd_model.scale_factor)
        info = getattr(sd_model, "sd_checkpoint_info", None)
        self.model_name = getattr(info, "model_name", None) or getattr(info, "name", None)
        self.model_hash = getattr(sd_model, "sd_model_hash", None) or getattr(info, "shorthash", None)

    # ---- HostModel ----

    @property
    def device(self) -> torch.device:
        return torch.device(self.devices.device)

    @property
    def dtype(self) -> torch.dtype:
        return self.devices.dtype_unet

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        # webui may replace alphas_cumprod for a sampling option (sd_models.apply_alpha_schedule_override);
        # the model was trained on the schedule it was loaded with
        values = getattr(self.model, "alphas_cumprod_original", None)
        if values is None:
            values = self.model.alphas_cumprod
        return values.detach().float().cpu()

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """VAE moments cat(mean, logvar) (B, 2C, h, w) of pixels in [-1, 1], through webui's VAE."""
        return self.parts.moments(pixels, self.devices)

    @torch.no_grad()
    def encode_prompts(self, prompts: List[str]) -> Any:
        with self.devices.autocast():
            return self.parts.encode_prompts(prompts)

    def size_conditioning(self, cond: Any, sizes) -> Any:
        """SDXL: each image's original size, crop and target size in the conditioning (others: as it is)."""
        return self.parts.size_conditioning(cond, sizes)

    def predict(self, x_noisy: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        device = self.device
        if isinstance(cond, torch.Tensor):
            cond = cond.to(device)
        elif isinstance(cond, dict):
            cond = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in cond.items()}
        return self.model.apply_model(x_noisy.to(device), t.to(device), cond)

    def attention_root(self) -> nn.Module:
        return self.parts.unet()

    def freeze(self) -> None:
        """No gradients for any base weight, eval mode; the session restores both after the run."""
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.model.eval()

    # ---- beyond the protocol ----

    @property
    def model_id(self) -> str:
        """Names the encoder in latent-cache keys: the checkpoint and the VAE webui has loaded."""
        vae = self.sd_vae.get_loaded_vae_hash() or "builtin"
        return f"{self.model_hash or self.model_name or type(self.model).__name__}|vae:{vae}"

    def text_encoder(self) -> nn.Module:
        return self.parts.text_encoder()

    def vae(self) -> nn.Module:
        return self.model.first_stage_model
