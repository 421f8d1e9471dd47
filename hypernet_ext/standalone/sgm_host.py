"""HostModel for an sgm ``DiffusionEngine`` (SDXL base and refiner), and importing sgm.

``SgmHost(model)`` gives the trainer VAE moments, prompt conditioning through the model's GeneralConditioner (a
dict with ``crossattn`` and ``vector``, the size part of ``vector`` made per image by hypernet_ext.sdxl), the
UNet's prediction through the model's wrapper (what webui's ``apply_model`` calls), and the noise schedule of its
DiscreteDenoiser. sgm is not on PyPI: ``import_sgm`` finds it on sys.path or in a folder the user names.
"""
from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path
from typing import Any, List, Optional, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..sdxl import AESTHETIC_SCORE, DEFAULT_SIZE, SizeConditioner, size_inputs, vae_moments
from .ldm_host import UnetOf

logger = logging.getLogger(__name__)

SGM_HELP = ("SDXL models need sgm (Stability-AI/generative-models), which is not on PyPI. webui has it in "
            "repositories/generative-models: pass that folder with --sgm-path (or put it on PYTHONPATH), or clone "
            "https://github.com/Stability-AI/generative-models and pass the clone")


def import_sgm(path=None):
    """The ``sgm`` package: from ``path`` (a folder holding ``sgm/``) when given, else from sys.path."""
    if path:
        folder = Path(path).expanduser().resolve()
        if not (folder / "sgm" / "__init__.py").is_file():
            raise ConfigError(f"--sgm-path {path}: no sgm package in that folder (expected {folder / 'sgm'}); "
                              f"{SGM_HELP}")
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    try:
        sgm = importlib.import_module("sgm")
        importlib.import_module("sgm.util")
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] == "sgm":
            raise ConfigError(f"sgm is not importable. {SGM_HELP}") from None
        raise ConfigError(f"sgm needs the package {err.name!r}, which is not installed: pip install {err.name} (or "
                          "run in webui's environment, which has it)") from None
    return sgm


def parameterization_of(denoiser) -> str:
    """'eps' or 'v' from the denoiser's scaling class (sgm's EpsScaling / VScaling), as webui decides it."""
    name = type(getattr(denoiser, "scaling", None)).__name__
    kinds = {"EpsScaling": "eps", "VScaling": "v"}
    if name not in kinds:
        raise ConfigError(f"the model's denoiser scales with {name}; hypernet_ext trains eps (EpsScaling) and v "
                          "(VScaling) models")
    return kinds[name]


def alphas_from_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    """alphas_cumprod (T,) from a DiscreteDenoiser's sigmas (smallest first): sigma^2 = (1 - a) / a."""
    sigmas = sigmas.detach().double().cpu()
    return (1.0 / (1.0 + sigmas ** 2)).float()


class SgmHost(UnetOf):
    """Wraps a DiffusionEngine; the UNet is ``model.model.diffusion_model``. Follows hypernet_ext.host.HostModel,
    plus ``size_conditioning`` (each image's original size, crop and target size)."""

    def __init__(self, model: nn.Module, model_name: Optional[str] = None, model_hash: Optional[str] = None,
                 aesthetic_score: float = AESTHETIC_SCORE):
        for attribute in ("model", "conditioner", "denoiser", "first_stage_model", "scale_factor"):
            if not hasattr(model, attribute):
                raise ConfigError(f"SgmHost: {type(model).__name__} has no {attribute}; pass an sgm DiffusionEngine")
        sigmas = getattr(model.denoiser, "sigmas", None)
        if not isinstance(sigmas, torch.Tensor):
            raise ConfigError(f"SgmHost: the denoiser {type(model.denoiser).__name__} has no discrete noise levels "
                              "(sigmas); hypernet_ext trains DiscreteDenoiser models such as SDXL")
        self.model = model
        self.model_name = model_name
        self.model_hash = model_hash
        self.parameterization = parameterization_of(model.denoiser)
        self._alphas = alphas_from_sigmas(sigmas)
        self.scale_factor = float(model.scale_factor)
        for embedder in model.conditioner.embedders:   # no classifier-free dropout of the prompt (webui does this)
            embedder.ucg_rate = 0.0
        self.sizes = SizeConditioner(model.conditioner, {"aesthetic_score": aesthetic_score})

    # ---- HostModel ----

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self._alphas

    def to(self, device) -> "SgmHost":
        """Move the model; the text embedders' token device follows (sgm keeps it as a plain attribute)."""
        self.model.to(device)
        for embedder in self.model.conditioner.embedders:
            if isinstance(getattr(embedder, "device", None), (str, torch.device)):
                embedder.device = str(torch.device(device))
        return self

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """VAE moments cat(mean, logvar) (B, 2C, h, w) of pixels in [-1, 1] (the model's encode_first_stage
        would give a scaled sample)."""
        return vae_moments(self.model.first_stage_model, pixels.to(self.device))

    @torch.no_grad()
    def encode_prompts(self, prompts: List[str]) -> Any:
        """{'crossattn', 'vector'} for ``prompts`` at the default size (1024x1024, no crop); size_conditioning
        puts in each image's own."""
        batch = {"txt": list(prompts), **size_inputs([DEFAULT_SIZE] * len(prompts), self.device)}
        batch.update({key: torch.full((len(prompts), 1), float(value), device=self.device)
                      for key, value in self.sizes.extra.items()})
        return self.model.conditioner(batch)

    def size_conditioning(self, cond: Any, sizes: Sequence) -> Any:
        return self.sizes(cond, sizes)

    def predict(self, x_noisy: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        """The UNet's output through the model's wrapper (webui's apply_model does the same call)."""
        device, dtype = self.device, self.dtype
        cond = {key: value.to(device, dtype) if isinstance(value, torch.Tensor) else value
                for key, value in cond.items()}
        return self.model.model(x_noisy.to(device, dtype), t.to(device), cond)

    def attention_root(self) -> nn.Module:
        return self.unet

    def freeze(self) -> None:
        """No gradients for any base weight, and eval mode. sgm's checkpoint flags are the trainer's business."""
        self.model.eval()
        for param in self.model.parameters():
            param.requires_grad_(False)

    # ---- beyond the protocol ----

    def text_encoder(self) -> nn.Module:
        """The conditioner: both text encoders (its size embedders have no weights)."""
        return self.model.conditioner

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] (float32, CPU) for scaled latents."""
        dtype = next(self.model.first_stage_model.parameters()).dtype
        return self.model.decode_first_stage(latents.to(self.device, dtype)).float().cpu().clamp(-1, 1)

    @property
    def model_id(self) -> str:
        return self.model_hash or self.model_name or type(self.model).__name__

