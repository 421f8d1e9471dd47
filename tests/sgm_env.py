"""A tiny SDXL for the tests, built with the sgm stand-in (tests/sgm_stub) from a config laid out like the
published sd_xl_base.yaml: the same targets and settings (DiscreteDenoiser with EpsScaling and
LegacyDDPMDiscretization over 1000 steps, scale factor 0.13025, the conditioner's CLIP and OpenCLIP text embedders
and three ConcatTimestepEmbedderND size embedders, ``num_classes: sequential`` UNet with ``use_checkpoint: True``,
the VAE inference wrapper), with everything shrunk: CLIP hidden 48 + OpenCLIP width 32 = context 80, pooled 32 +
3 x 2 x 16 size channels = adm 128, UNet channels 32/64/128 with attention at 64 and 128 (SDXL: 640, 1280), two
transformer blocks deep at the lowest level and in the middle (SDXL: ten).
"""
import contextlib
import io
import sys
from pathlib import Path

import torch

STUB = Path(__file__).resolve().parent / "sgm_stub"
TINY_OPEN_CLIP = "tiny-sdxl-open-clip"
OPEN_CLIP_CONFIG = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
                    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
CLIP_FOLDER = "tiny-sdxl-clip-48-v1"
CONTEXT, ADM, SIZE_DIM = 80, 128, 16
WIDTHS = [64, 80, 128]   # the tiny UNet's attention widths: self-attention 64 and 128, context 80


def use_sgm():
    """Put the stand-in first on sys.path (once) and register the tiny OpenCLIP architecture with open_clip."""
    if str(STUB) not in sys.path:
        sys.path.insert(0, str(STUB))
    import open_clip

    open_clip.factory._MODEL_CONFIGS.setdefault(TINY_OPEN_CLIP, OPEN_CLIP_CONFIG)


def tiny_clip_dir(root) -> Path:
    """A CLIP text model folder (config and tokenizer) with hidden size 48 and two layers."""
    from transformers import CLIPTextConfig

    from hypernet_ext.standalone.demo import _write_tokenizer

    folder = Path(root) / CLIP_FOLDER
    if (folder / "config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    _write_tokenizer(folder)
    CLIPTextConfig(vocab_size=49408, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                   num_attention_heads=2, max_position_embeddings=77, projection_dim=48).save_pretrained(str(folder))
    return folder


def tiny_sdxl_config(clip_dir, scaling: str = "EpsScaling") -> dict:
    """The ``model`` section of the tiny SDXL yaml (see the module docstring)."""
    sgm = "sgm.modules.diffusionmodules."
    size = {"target": "sgm.modules.encoders.modules.ConcatTimestepEmbedderND", "params": {"outdim": SIZE_DIM},
            "is_trainable": False}
    embedders = [
        {"is_trainable": False, "input_key": "txt", "target": "sgm.modules.encoders.modules.FrozenCLIPEmbedder",
         "params": {"version": str(clip_dir), "layer": "hidden", "layer_idx": 1, "device": "cpu"}},
        {"is_trainable": False, "input_key": "txt", "target": "sgm.modules.encoders.modules.FrozenOpenCLIPEmbedder2",
         "params": {"arch": TINY_OPEN_CLIP, "version": "laion2b_s39b_b160k", "freeze": True, "layer": "penultimate",
                    "always_return_pooled": True, "legacy": False, "device": "cpu"}},
        dict(size, input_key="original_size_as_tuple"),
        dict(size, input_key="crop_coords_top_left"),
        dict(size, input_key="target_size_as_tuple"),
    ]
    unet = dict(adm_in_channels=ADM, num_classes="sequential", use_checkpoint=True, in_channels=4, out_channels=4,
                model_channels=32, attention_resolutions=[2, 4], num_res_blocks=1, channel_mult=[1, 2, 4],
                num_head_channels=16, use_spatial_transformer=True, use_linear_in_transformer=True,
                transformer_depth=[1, 1, 2], context_dim=CONTEXT, spatial_transformer_attn_type="softmax-xformers",
                legacy=False)
    vae = dict(embed_dim=4, monitor="val/rec_loss", lossconfig={"target": "torch.nn.Identity"},
               ddconfig=dict(attn_type="vanilla", double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3,
                             ch=32, ch_mult=[1, 2, 4, 4], num_res_blocks=1, attn_resolutions=[], dropout=0.0))
    denoiser = {"num_idx": 1000,
                "weighting_config": {"target": sgm + "denoiser_weighting.EpsWeighting"},
                "scaling_config": {"target": sgm + "denoiser_scaling." + scaling},
                "discretization_config": {"target": sgm + "discretizer.LegacyDDPMDiscretization"}}
    return {"target": "sgm.models.diffusion.DiffusionEngine", "params": {
        "scale_factor": 0.13025, "disable_first_stage_autocast": True,
        "denoiser_config": {"target": sgm + "denoiser.DiscreteDenoiser", "params": denoiser},
        "network_config": {"target": sgm + "openaimodel.UNetModel", "params": unet},
        "conditioner_config": {"target": "sgm.modules.GeneralConditioner", "params": {"emb_models": embedders}},
        "first_stage_config": {"target": "sgm.models.autoencoder.AutoencoderKLInferenceWrapper", "params": vae}}}


def build_tiny_sdxl(root, seed: int = 0, scaling: str = "EpsScaling"):
    """The tiny SDXL with random weights (the same for the same seed; the global RNG is left alone)."""
    from omegaconf import OmegaConf

    from hypernet_ext.standalone.text_encoders import weightless_text_encoders
    from hypernet_ext.standalone.tiny import rerandomize_zero_init

    use_sgm()
    import sgm.modules.encoders.modules as encoders
    from sgm.util import instantiate_from_config

    config = OmegaConf.create(tiny_sdxl_config(tiny_clip_dir(root), scaling))
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(io.StringIO()), \
            weightless_text_encoders(encoders):   # the yaml's pretrained tag would be a download
        torch.manual_seed(seed)
        model = instantiate_from_config(config)
    rerandomize_zero_init(model.model.diffusion_model, seed=seed)
    return model.eval()


def write_tiny_sdxl(model, root, folder: Path, name: str = "tiny-sdxl"):
    """The model's weights as ``<name>.safetensors`` and its yaml as ``<name>.yaml`` in ``folder``."""
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    ckpt, yaml = folder / f"{name}.safetensors", folder / f"{name}.yaml"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    OmegaConf.save(OmegaConf.create({"model": tiny_sdxl_config(tiny_clip_dir(root))}), yaml)
    return ckpt, yaml
