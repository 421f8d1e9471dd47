"""Model configs laid out like the published SD1 (v1-inference) and SD2 (v2-inference at 512 with eps prediction,
v2-inference-v at 768 with v prediction) ldm yamls, with a
tiny UNet and VAE: the same targets, the same LatentDiffusion settings and the flags a loader must cope with
(use_checkpoint and use_fp16 on in SD2's, the text encoders named without weights), written for these tests.
"""
from pathlib import Path

from omegaconf import OmegaConf

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
