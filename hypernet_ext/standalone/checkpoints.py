"""Loading a Stable Diffusion checkpoint (SD 1.x, SD 2.x, SDXL) for the command line.

``load_checkpoint(ckpt, config=None)`` reads the weights without running anything from the file, takes the
model's config from its yaml (ldm or sgm targets) or, without one, infers the published architecture from the
weights as webui does (model_configs), builds the model with its own checkpointing off (it would give a
hypernetwork no gradient) and its text encoders without pretrained weights, loads every weight the model uses
from the checkpoint, and returns the HostModel for its kind: LdmHost (SD1/SD2) or SgmHost (SDXL, needs sgm).
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, FormatError, excerpt
from ..fileio import short_hash

logger = logging.getLogger(__name__)

# what must come from the checkpoint: every parameter of these parts (the text encoders have no other source)
PARTS = {"ldm": (("model.diffusion_model.", "UNet"), ("cond_stage_model.", "text encoder"),
                 ("first_stage_model.", "VAE")),
         "sgm": (("model.diffusion_model.", "UNet"), ("conditioner.", "text encoder"), ("first_stage_model.", "VAE"))}
# parameters the encoders never use, which some checkpoints leave out (OpenCLIP's projection and logit scale in
# SD2; the logit scale in SDXL, whose OpenCLIP projection gives the pooled vector and must be there)
UNUSED = ("cond_stage_model.model.text_projection", "cond_stage_model.model.logit_scale",
          "conditioner.embedders.0.model.logit_scale", "conditioner.embedders.1.model.logit_scale")


def read_state_dict(path: Path) -> dict:
    """The checkpoint's weights, read without running anything from it: .safetensors by safetensors, .ckpt by
    hypernet_ext's own torch reader, which lets through only tensors, plain values and (as inert placeholders
    that are never constructed) the harmless classes SD checkpoints name, such as Lightning's ModelCheckpoint."""
    path = Path(path)
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


def load_checkpoint(ckpt, config=None, device="cpu", half: bool = False, sgm_path=None):
    """The HostModel of checkpoint ``ckpt`` (.safetensors or .ckpt) with ``config`` (its ldm or sgm yaml; None:
    inferred from the weights). ``half`` keeps the UNet in float16; ``sgm_path`` is a folder holding sgm."""
    from omegaconf import OmegaConf

    from .model_configs import guess_config

    ckpt = Path(ckpt)
    for path in (ckpt, config):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{path} does not exist")
    weights = read_state_dict(ckpt)   # first: a refused or damaged file fails before the model is built
    if config is None:
        name, built = guess_config(weights)
        logger.info("%s: no --config given; the weights are %s (as webui infers it)", ckpt.name, name)
        model_config, source = OmegaConf.create(built).model, f"the published {name} config"
    else:
        name, source = None, Path(config).name
        model_config = OmegaConf.load(config).get("model")
        if model_config is None or "target" not in model_config:
            raise ConfigError(f"{config}: no model target; give the checkpoint's ldm or sgm yaml")
    kind = "sgm" if str(model_config.target).startswith("sgm.") else "ldm"
    model = _build_sgm(model_config, sgm_path) if kind == "sgm" else _build_ldm(model_config, device)
    _load_weights(model, weights, ckpt, source, PARTS[kind])
    del weights
    if name == "v2-inference":
        from .model_configs import predicts_velocity

        if predicts_velocity(model.model.diffusion_model):
            logger.info("%s predicts v (v2-inference-v)", ckpt.name)
            model.parameterization = "v"
    if half:
        model.model.half()
    if kind == "sgm":
        from .sgm_host import SgmHost

        return SgmHost(model, model_name=ckpt.stem, model_hash=short_hash(ckpt)).to(device)
    from .ldm_host import LdmHost

    return LdmHost(model, model_name=ckpt.stem, model_hash=short_hash(ckpt)).to(device)


def _build_ldm(config, device) -> nn.Module:
    from ldm.util import instantiate_from_config

    from .text_encoders import weightless_text_encoders

    params = config.get("params", {})
    _no_builtin_checkpointing(params, "unet_config")
    if "cond_stage_config" in params and "params" in params.cond_stage_config \
            and "device" in params.cond_stage_config.params:
        params.cond_stage_config.params.device = str(device)
    with weightless_text_encoders():
        return instantiate_from_config(config)


def _build_sgm(config, sgm_path) -> nn.Module:
    from .sgm_host import import_sgm
    from .text_encoders import weightless_text_encoders

    import_sgm(sgm_path)
    from sgm.util import instantiate_from_config

    params = config.get("params", {})
    _no_builtin_checkpointing(params, "network_config")
    ddconfig = params.get("first_stage_config", {}).get("params", {}).get("ddconfig", {})
    if ddconfig.get("attn_type") == "vanilla-xformers" and importlib.util.find_spec("xformers") is None:
        logger.info("xformers is not installed: the VAE uses plain attention (the same weights)")
        ddconfig.attn_type = "vanilla"
    with weightless_text_encoders(importlib.import_module("sgm.modules.encoders.modules")):
        return instantiate_from_config(config)


def _no_builtin_checkpointing(params, key: str) -> None:
    """Build the UNet with ``use_checkpoint: False``: the SD yamls set True, and ldm's/sgm's CheckpointFunction
    then recomputes each block under no_grad, differentiating only the block's own weights, never a
    hypernetwork's."""
    unet = params.get(key)
    if unet is None:
        return
    if "params" not in unet:
        unet.params = {}
    if unet.params.get("use_checkpoint", False):
        logger.info("building the UNet with use_checkpoint False (the config says True): the model's own "
                    "checkpointing gives a hypernetwork no gradient")
    unet.params.use_checkpoint = False


def _load_weights(model: nn.Module, state: dict, ckpt: Path, source: str, parts) -> None:
    """Load the checkpoint's weights; FormatError when they do not fit or a part's parameters are missing."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:   # shapes differ
        detail = " ".join(str(err).split())[:300]
        raise FormatError(ckpt, f"does not fit {source} ({detail}); choose the yaml of this model family") from None
    params = {name for name, _ in model.named_parameters()}
    for prefix, part in parts:
        lost = [k for k in missing if k.startswith(prefix) and k in params and k not in UNUSED]
        if lost:
            raise FormatError(ckpt, f"does not fit {source}: {len(lost)} {part} weights missing, e.g. {lost[0]}; "
                                    "choose the yaml of this model family (the weights must all come from the "
                                    "checkpoint)")
    if missing or unexpected:
        logger.info("%s: %d weights missing (buffers and unused), %d unexpected", ckpt.name, len(missing),
                    len(unexpected))
