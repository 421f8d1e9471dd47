"""HostModel for an ldm ``LatentDiffusion`` (SD1 eps-prediction, SD2 v-prediction), and loading one from disk.

``LdmHost(model)`` gives the trainer what it needs (VAE moments, prompt conditioning, UNet prediction, noise
schedule) plus ``decode_latents`` for previews. ``load_ldm_checkpoint(ckpt, config_yaml)`` builds the model
from its yaml with omegaconf and ldm's instantiate_from_config (ldm's own checkpointing off: it would give a
hypernetwork no gradient; text encoders without pretrained weights) and loads .safetensors or .ckpt weights
safely, every weight the model uses from the checkpoint.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, List, Optional

import torch
from torch import nn

from ..errors import ConfigError, FormatError, excerpt
from ..fileio import short_hash

logger = logging.getLogger(__name__)


class LdmHost:
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
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def unet(self) -> nn.Module:
        return self.model.model.diffusion_model

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


def _read_state_dict(path: Path) -> dict:
    """The checkpoint's weights, read without running anything from it: .safetensors by safetensors, .ckpt by
    hypernet_ext's own torch reader, which lets through only tensors, plain values and (as inert placeholders
    that are never constructed) the harmless classes SD checkpoints name, such as Lightning's ModelCheckpoint."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise FormatError(path, f"cannot be read as safetensors ({excerpt(str(err), 120)}); copy or download "
                                    "it again") from None
    from ..formats.safe_pickle import CHECKPOINT
    from ..formats.torch_read import read_file

    data = read_file(path, CHECKPOINT, what="a Stable Diffusion checkpoint")
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise FormatError(path, "holds no state dict; it is not a Stable Diffusion checkpoint")
    weights = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if len(weights) < len(data):
        logger.info("%s: %d entries of its state dict are not tensors and were left out", path.name,
                    len(data) - len(weights))
    return weights


def _no_builtin_checkpointing(params) -> None:
    """Build the UNet with ``use_checkpoint: False``: the SD yamls set True, and ldm's CheckpointFunction then
    recomputes each block under no_grad, differentiating only the block's own weights, never a hypernetwork's."""
    unet = params.get("unet_config")
    if unet is None:
        return
    if "params" not in unet:
        unet.params = {}
    if unet.params.get("use_checkpoint", False):
        logger.info("building the UNet with use_checkpoint False (the yaml says True): ldm's checkpointing "
                    "gives a hypernetwork no gradient")
    unet.params.use_checkpoint = False


def load_ldm_checkpoint(ckpt, config_yaml, device="cpu", half: bool = False) -> LdmHost:
    """An LdmHost for a Stable Diffusion 1.x/2.x checkpoint (.safetensors or .ckpt, loaded without running code)
    and its ldm yaml (e.g. v1-inference.yaml, v2-inference-v.yaml). The text encoder is built from its
    configuration, not downloaded: its weights come from the checkpoint like the rest; only CLIP's tokenizer
    files (SD1) are read from the Hugging Face cache (see text_encoders.weightless_text_encoders)."""
    from ldm.util import instantiate_from_config
    from omegaconf import OmegaConf

    from .text_encoders import weightless_text_encoders

    ckpt, config_yaml = Path(ckpt), Path(config_yaml)
    for path in (ckpt, config_yaml):
        if not path.is_file():
            raise ConfigError(f"{path} does not exist")
    weights = _read_state_dict(ckpt)   # first: a refused or damaged file fails before the model is built
    config = OmegaConf.load(config_yaml)
    params = config.model.get("params", {})
    _no_builtin_checkpointing(params)
    if "cond_stage_config" in params and "params" in params.cond_stage_config \
            and "device" in params.cond_stage_config.params:
        params.cond_stage_config.params.device = str(device)
    with weightless_text_encoders():
        model = instantiate_from_config(config.model)
    _load_weights(model, weights, ckpt, config_yaml.name)
    del weights
    if half:
        model.model.half()
    host = LdmHost(model, model_name=ckpt.stem, model_hash=short_hash(ckpt))
    return host.to(device)


# what must come from the checkpoint: every parameter of these parts (the text encoder has no other source)
_PARTS = (("model.diffusion_model.", "UNet"), ("cond_stage_model.", "text encoder"), ("first_stage_model.", "VAE"))
# parameters ldm's encoders never use, which some checkpoints leave out (OpenCLIP's projection and logit scale)
_UNUSED = ("cond_stage_model.model.text_projection", "cond_stage_model.model.logit_scale")


def _load_weights(model: nn.Module, state: dict, ckpt: Path, yaml_name: str) -> None:
    """Load the checkpoint's weights; FormatError when they do not fit or a part's parameters are missing."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:   # shapes differ
        detail = " ".join(str(err).split())[:300]
        raise FormatError(ckpt, f"does not fit {yaml_name} ({detail}); choose the yaml of this model family") from None
    params = {name for name, _ in model.named_parameters()}
    for prefix, part in _PARTS:
        lost = [k for k in missing if k.startswith(prefix) and k in params and k not in _UNUSED]
        if lost:
            raise FormatError(ckpt, f"does not fit {yaml_name}: {len(lost)} {part} weights missing, e.g. {lost[0]}; "
                                    "choose the yaml of this model family (the weights must all come from the "
                                    "checkpoint)")
    if missing or unexpected:
        logger.info("%s: %d weights missing (buffers and unused), %d unexpected", ckpt.name, len(missing),
                    len(unexpected))
