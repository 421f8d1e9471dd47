"""The published Stable Diffusion architectures as configs (what webui's yamls describe), and which one a
checkpoint's weights are, decided the way webui v1.10.1 decides it (modules/sd_models_config.py).

``CONFIGS`` maps a name (SD1's v1-inference, SD2's v2-inference at 512 with eps and v2-inference-v at 768 with v
prediction, sd_xl_base, sd_xl_refiner) to a function building its ``{"model": ...}`` config; ``guess_config``
picks one from the state dict's keys and shapes; SD2's eps and v checkpoints share a layout, so
``predicts_velocity`` tells them apart by running the loaded UNet as webui does.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, Tuple

import torch
from torch import nn

from ..errors import ConfigError

logger = logging.getLogger(__name__)

LDM = "ldm.modules."
SGM = "sgm.modules."
DDPM = dict(linear_start=0.00085, linear_end=0.0120, num_timesteps_cond=1, log_every_t=200, timesteps=1000,
            first_stage_key="jpg", cond_stage_key="txt", image_size=64, channels=4, cond_stage_trainable=False,
            conditioning_key="crossattn", monitor="val/loss_simple_ema", scale_factor=0.18215, use_ema=False)


def _vae(target: str, attn_type=None) -> dict:
    """SD's KL autoencoder (factor 8, 4 latent channels): the same in every family."""
    ddconfig = dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128, ch_mult=[1, 2, 4, 4],
                    num_res_blocks=2, attn_resolutions=[], dropout=0.0)
    if attn_type:
        ddconfig = dict(attn_type=attn_type, **ddconfig)
    return {"target": target, "params": dict(embed_dim=4, monitor="val/rec_loss", ddconfig=ddconfig,
                                             lossconfig={"target": "torch.nn.Identity"})}


def _ldm_unet(context_dim: int, sd2: bool) -> dict:
    params = dict(image_size=32, in_channels=4, out_channels=4, model_channels=320, attention_resolutions=[4, 2, 1],
                  num_res_blocks=2, channel_mult=[1, 2, 4, 4], use_spatial_transformer=True, transformer_depth=1,
                  context_dim=context_dim, use_checkpoint=sd2, legacy=False)
    if sd2:
        params.update(use_fp16=True, num_head_channels=64, use_linear_in_transformer=True)
    else:
        params.update(num_heads=8)
    return {"target": LDM + "diffusionmodules.openaimodel.UNetModel", "params": params}


def sd1() -> dict:
    """v1-inference: SD 1.x, CLIP ViT-L/14 text encoder (context 768), eps prediction."""
    params = dict(DDPM, unet_config=_ldm_unet(768, sd2=False), first_stage_config=_vae("ldm.models.autoencoder."
                                                                                        "AutoencoderKL"),
                  cond_stage_config={"target": LDM + "encoders.modules.FrozenCLIPEmbedder"})
    return {"model": {"base_learning_rate": 1.0e-4, "target": "ldm.models.diffusion.ddpm.LatentDiffusion",
                      "params": params}}


def sd2(v: bool = False) -> dict:
    """v2-inference (512, eps) or v2-inference-v (768, v): OpenCLIP ViT-H/14's penultimate layer (context 1024)."""
    params = dict(DDPM, unet_config=_ldm_unet(1024, sd2=True),
                  first_stage_config=_vae("ldm.models.autoencoder.AutoencoderKL"),
                  cond_stage_config={"target": LDM + "encoders.modules.FrozenOpenCLIPEmbedder",
                                     "params": {"freeze": True, "layer": "penultimate"}})
    if v:
        params = dict(parameterization="v", **params)
    return {"model": {"base_learning_rate": 1.0e-4, "target": "ldm.models.diffusion.ddpm.LatentDiffusion",
                      "params": params}}


def _sizes(keys) -> list:
    """SDXL's size (and aesthetic score) embedders: 256 sinusoidal channels per number."""
    return [{"is_trainable": False, "input_key": key, "target": SGM + "encoders.modules.ConcatTimestepEmbedderND",
             "params": {"outdim": 256}} for key in keys]


def _open_clip_big_g() -> dict:
    return {"is_trainable": False, "input_key": "txt", "target": SGM + "encoders.modules.FrozenOpenCLIPEmbedder2",
            "params": {"arch": "ViT-bigG-14", "version": "laion2b_s39b_b160k", "freeze": True,
                       "layer": "penultimate", "always_return_pooled": True, "legacy": False}}


def _sdxl(unet: dict, embedders: list) -> dict:
    diffusion = SGM + "diffusionmodules."
    denoiser = {"target": diffusion + "denoiser.DiscreteDenoiser", "params": {
        "num_idx": 1000, "weighting_config": {"target": diffusion + "denoiser_weighting.EpsWeighting"},
        "scaling_config": {"target": diffusion + "denoiser_scaling.EpsScaling"},
        "discretization_config": {"target": diffusion + "discretizer.LegacyDDPMDiscretization"}}}
    network = {"target": diffusion + "openaimodel.UNetModel", "params": dict(
        num_classes="sequential", use_checkpoint=True, in_channels=4, out_channels=4, num_res_blocks=2,
        attention_resolutions=[4, 2], num_head_channels=64, use_spatial_transformer=True,
        use_linear_in_transformer=True, spatial_transformer_attn_type="softmax-xformers", legacy=False, **unet)}
    return {"model": {"target": "sgm.models.diffusion.DiffusionEngine", "params": {
        "scale_factor": 0.13025, "disable_first_stage_autocast": True, "denoiser_config": denoiser,
        "network_config": network,
        "conditioner_config": {"target": "sgm.modules.GeneralConditioner", "params": {"emb_models": embedders}},
        "first_stage_config": _vae("sgm.models.autoencoder.AutoencoderKLInferenceWrapper", "vanilla-xformers")}}}


def sdxl_base() -> dict:
    """sd_xl_base: CLIP ViT-L/14 (hidden layer 11) and OpenCLIP ViT-bigG/14 (penultimate, pooled): context 2048,
    a 2816-wide vector (pooled 1280 + original size, crop, target size 3 x 512); UNet 320/640/1280 channels,
    attention at 640 (depth 2) and 1280 (depth 10)."""
    clip = {"is_trainable": False, "input_key": "txt", "target": SGM + "encoders.modules.FrozenCLIPEmbedder",
            "params": {"layer": "hidden", "layer_idx": 11}}
    unet = dict(adm_in_channels=2816, model_channels=320, channel_mult=[1, 2, 4], transformer_depth=[1, 2, 10],
                context_dim=2048)
    return _sdxl(unet, [clip, _open_clip_big_g()] +
                 _sizes(("original_size_as_tuple", "crop_coords_top_left", "target_size_as_tuple")))


def sdxl_refiner() -> dict:
    """sd_xl_refiner: OpenCLIP ViT-bigG/14 only (context 1280), original size, crop and aesthetic score."""
    unet = dict(adm_in_channels=2560, model_channels=384, channel_mult=[1, 2, 4, 4], transformer_depth=4,
                context_dim=[1280, 1280, 1280, 1280])
    return _sdxl(unet, [_open_clip_big_g()] +
                 _sizes(("original_size_as_tuple", "crop_coords_top_left", "aesthetic_score")))


CONFIGS: Dict[str, Callable[[], dict]] = {
    "v1-inference": sd1, "v2-inference": sd2, "v2-inference-v": lambda: sd2(v=True),
    "sd_xl_base": sdxl_base, "sd_xl_refiner": sdxl_refiner,
}
FAMILY = {"v1-inference": "sd1", "v2-inference": "sd2", "v2-inference-v": "sd2", "sd_xl_base": "sdxl",
          "sd_xl_refiner": "sdxl-refiner"}


def guess_config(state: dict) -> Tuple[str, dict]:
    """(name, config) of the published architecture ``state`` (a state dict, or any mapping of key -> tensor or
    shape) has, from the keys webui looks at; SD2 gives v2-inference, which ``predicts_velocity`` refines once
    the weights are loaded. ConfigError for what hypernet_ext does not know (inpainting, depth, unCLIP, SD3...)."""
    def shape(key):
        value = state.get(key)
        return tuple(value.shape) if hasattr(value, "shape") else (tuple(value) if value is not None else None)

    unet_in = shape("model.diffusion_model.input_blocks.0.0.weight")
    if "model.diffusion_model.x_embedder.proj.weight" in state:
        name = None   # SD3
    elif unet_in is not None and unet_in[1] != 4:
        raise ConfigError(f"the checkpoint's UNet takes {unet_in[1]} input channels (an inpainting or instruct "
                          "model); hypernet_ext infers configs for text-to-image models only: give --config")
    elif "conditioner.embedders.1.model.ln_final.weight" in state:
        name = "sd_xl_base"
    elif "conditioner.embedders.0.model.ln_final.weight" in state:
        name = "sd_xl_refiner"
    elif "cond_stage_model.model.ln_final.weight" in state:   # OpenCLIP: SD 2.x (webui also checks its width)
        name = "v2-inference"
    elif unet_in is not None and "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" in state:
        name = "v1-inference"
    else:
        name = None
    if name is None:
        raise ConfigError("the checkpoint is not one of the architectures hypernet_ext knows (SD 1.x, SD 2.x, SDXL "
                          "base and refiner): give its yaml with --config")
    return name, CONFIGS[name]()


@torch.no_grad()
def predicts_velocity(unet: nn.Module) -> bool:
    """True when an SD2 UNet predicts v: on a constant latent at the last timestep, an eps model's output is
    close to its input, a v model's far below it (webui's rule, modules/sd_models_config.py)."""
    context_dim = next(m.to_k.in_features for name, m in unet.named_modules() if name.endswith("attn2"))
    param = next(unet.parameters())
    x = torch.full((1, 4, 8, 8), 0.5, device=param.device, dtype=param.dtype)
    context = torch.full((1, 2, context_dim), 0.5, device=param.device, dtype=param.dtype)
    out = unet(x, torch.tensor([999], device=param.device), context=context)
    return float((out - x).float().mean()) < -1
