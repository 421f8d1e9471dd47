"""Model configs laid out like the published SD1 (v1-inference) and SD2 (v2-inference at 512 with eps prediction,
v2-inference-v at 768 with v prediction) ldm yamls, with a
tiny UNet and VAE: the same targets, the same LatentDiffusion settings and the flags a loader must cope with
(use_checkpoint and use_fp16 on in SD2's, the text encoders named without weights), written for these tests.
"""
import contextlib
import io
from pathlib import Path

import torch
from omegaconf import OmegaConf

TINY_OPEN_CLIP = "tiny-test-open-clip"   # SD2's OpenCLIP text encoder, shrunk to width 64 (the tiny SD2's context)
OPEN_CLIP = {"embed_dim": 64, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
ENCODERS = {"sd1": "ldm.modules.encoders.modules.FrozenCLIPEmbedder",
            "sd2": "ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder",
            "sd2-v": "ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder"}


def tiny_sd_config(family: str, context_dim: int, cond_params: dict) -> dict:
    """The model section of an SD1 ("sd1"), SD2 512 ("sd2") or SD2 768-v ("sd2-v") inference config, shrunk."""
    sd2 = family in ("sd2", "sd2-v")
    unet = dict(image_size=32, in_channels=4, out_channels=4, model_channels=32, attention_resolutions=[1, 2],
                num_res_blocks=1, channel_mult=[1, 2], num_head_channels=16, use_spatial_transformer=True,
                transformer_depth=1, context_dim=context_dim, legacy=False,
                use_checkpoint=sd2, use_fp16=False)
    if sd2:
        unet["use_linear_in_transformer"] = True
    vae = dict(embed_dim=4, monitor="val/rec_loss", lossconfig={"target": "torch.nn.Identity"},
               ddconfig=dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=32,
                             ch_mult=[1, 2, 4, 4], num_res_blocks=1, attn_resolutions=[], dropout=0.0))
    cond = {"target": ENCODERS[family], "params": dict(cond_params)}
    if sd2:
        cond["params"].update(freeze=True, layer="penultimate")
    params = dict(linear_start=0.00085, linear_end=0.0120, num_timesteps_cond=1, log_every_t=200, timesteps=1000,
                  first_stage_key="jpg", cond_stage_key="txt", image_size=64, channels=4,
                  cond_stage_trainable=False, conditioning_key="crossattn", monitor="val/loss_simple_ema",
                  scale_factor=0.18215, use_ema=False,
                  unet_config={"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel", "params": unet},
                  first_stage_config={"target": "ldm.models.autoencoder.AutoencoderKL", "params": vae},
                  cond_stage_config=cond)
    if family == "sd2-v":
        params["parameterization"] = "v"
    return {"model": {"base_learning_rate": 1.0e-4, "target": "ldm.models.diffusion.ddpm.LatentDiffusion",
                      "params": params}}


def write_tiny_sd_yaml(family: str, context_dim: int, cond_params: dict, folder: Path) -> Path:
    path = Path(folder) / f"{family}-tiny.yaml"
    OmegaConf.save(OmegaConf.create(tiny_sd_config(family, context_dim, cond_params)), path)
    return path


def use_tiny_open_clip(monkeypatch) -> None:
    """Register TINY_OPEN_CLIP with open_clip for the test (``monkeypatch`` takes it out again)."""
    import open_clip

    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, TINY_OPEN_CLIP, OPEN_CLIP)


def tiny_model_config(family: str, cache) -> dict:
    """The tiny ``model`` config of an ldm family ("sd1", "sd2", "sd2-v"); SD2's needs use_tiny_open_clip."""
    from hypernet_ext.standalone.demo import tiny_clip_dir

    cond = {"version": str(tiny_clip_dir(cache)), "device": "cpu"} if family == "sd1" else \
        {"arch": TINY_OPEN_CLIP, "device": "cpu"}
    return tiny_sd_config(family, 768 if family == "sd1" else 64, cond)["model"]


def build_tiny_sd(family: str, cache, seed: int = 2):
    """A tiny ldm LatentDiffusion of ``family`` with random weights (the global RNG is left alone). SD2's output
    layer gets a bias that makes its prediction at the last timestep what eps (0.5) or v (-2) models give, so
    webui's v test (and model_configs') sees the difference."""
    from ldm.util import instantiate_from_config

    from hypernet_ext.standalone.text_encoders import weightless_text_encoders
    from hypernet_ext.standalone.tiny import rerandomize_zero_init

    config = tiny_model_config(family, cache)
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(io.StringIO()), weightless_text_encoders():
        torch.manual_seed(seed)
        model = instantiate_from_config(OmegaConf.create(config))
    rerandomize_zero_init(model.model.diffusion_model, seed=seed)
    if family != "sd1":
        with torch.no_grad():
            model.model.diffusion_model.out[-1].bias.fill_(-2.0 if family == "sd2-v" else 0.5)
    return model.eval()


def meta_unet(name: str):
    """The UNet of a published config hypernet_ext knows (standalone/model_configs.py: CONFIGS), on the meta
    device: its real layout and parameter count, no memory."""
    from hypernet_ext.standalone.model_configs import CONFIGS

    params = CONFIGS[name]()["model"]["params"]
    config = params.get("unet_config") or params.get("network_config")
    if config["target"].startswith("sgm."):
        from sgm_env import use_sgm

        use_sgm()
        from sgm.util import instantiate_from_config
    else:
        from ldm.util import instantiate_from_config
    with torch.device("meta"):
        return instantiate_from_config(config)
