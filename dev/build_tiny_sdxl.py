"""Build a tiny random-weight SDXL checkpoint with sgm's own classes (generative-models 45c443b, from a webui
harness's repositories/ folder), for dev/webui-e2e-sdxl.sh. Run with the harness's python:

    <harness>/venv/bin/python dev/build_tiny_sdxl.py --harness <harness> [--out DIR]

The yaml is sd_xl_base.yaml shrunk (same targets and settings; UNet channels 32/64/128 with attention at the
two lower levels as SDXL's 640/1280, CLIP-L from the harness's offline tiny text encoder (hidden 768, 2 layers),
OpenCLIP ViT-S-32's text tower (width 384) instead of ViT-bigG's, so the context is 768 + 384 = 1152 instead of
2048). The state dict has the keys webui v1.10.1 looks at to call a checkpoint SDXL (sd_models_config.py:
conditioner.embedders.1.model.ln_final.weight; sd_models.py: conditioner, middle-block attention); webui takes
the yaml beside the checkpoint instead of the full-size sd_xl_base.yaml.
"""
import argparse
import contextlib
import os
import sys

LAYOUT_KEYS = ("conditioner.embedders.1.model.ln_final.weight",      # sd_models_config.py: config_sdxl
               "model.diffusion_model.middle_block.1.transformer_blocks.0.attn1.to_q.weight",   # not SSD-1B
               "model.diffusion_model.input_blocks.0.0.weight")      # 4 channels: not the inpainting model
SGM = "sgm.modules.diffusionmodules."


def tiny_sdxl_yaml() -> dict:
    """sd_xl_base.yaml's model section, shrunk (see the module docstring)."""
    size = {"is_trainable": False, "target": "sgm.modules.encoders.modules.ConcatTimestepEmbedderND",
            "params": {"outdim": 256}}
    embedders = [
        {"is_trainable": False, "input_key": "txt", "target": "sgm.modules.encoders.modules.FrozenCLIPEmbedder",
         "params": {"layer": "hidden", "layer_idx": 1}},
        {"is_trainable": False, "input_key": "txt", "target": "sgm.modules.encoders.modules.FrozenOpenCLIPEmbedder2",
         # no pretrained weights exist for this arch: they are the checkpoint's (webui passes pretrained=None)
         "params": {"arch": "ViT-S-32", "version": None, "freeze": True, "layer": "penultimate",
                    "always_return_pooled": True, "legacy": False}},
        dict(size, input_key="original_size_as_tuple"),
        dict(size, input_key="crop_coords_top_left"),
        dict(size, input_key="target_size_as_tuple"),
    ]
    unet = dict(adm_in_channels=384 + 3 * 2 * 256, num_classes="sequential", use_checkpoint=True, in_channels=4,
                out_channels=4, model_channels=32, attention_resolutions=[4, 2], num_res_blocks=1,
                channel_mult=[1, 2, 4], num_head_channels=32, use_spatial_transformer=True,
                use_linear_in_transformer=True, transformer_depth=[1, 1, 2], context_dim=768 + 384,
                spatial_transformer_attn_type="softmax-xformers", legacy=False)
    vae = dict(embed_dim=4, monitor="val/rec_loss", lossconfig={"target": "torch.nn.Identity"},
               ddconfig=dict(attn_type="vanilla-xformers", double_z=True, z_channels=4, resolution=256, in_channels=3,
                             out_ch=3, ch=32, ch_mult=[1, 2, 4, 4], num_res_blocks=1, attn_resolutions=[],
                             dropout=0.0))
    denoiser = {"num_idx": 1000, "weighting_config": {"target": SGM + "denoiser_weighting.EpsWeighting"},
                "scaling_config": {"target": SGM + "denoiser_scaling.EpsScaling"},
                "discretization_config": {"target": SGM + "discretizer.LegacyDDPMDiscretization"}}
    return {"model": {"target": "sgm.models.diffusion.DiffusionEngine", "params": {
        "scale_factor": 0.13025, "disable_first_stage_autocast": True,
        "denoiser_config": {"target": SGM + "denoiser.DiscreteDenoiser", "params": denoiser},
        "network_config": {"target": SGM + "openaimodel.UNetModel", "params": unet},
        "conditioner_config": {"target": "sgm.modules.GeneralConditioner", "params": {"emb_models": embedders}},
        "first_stage_config": {"target": "sgm.models.autoencoder.AutoencoderKLInferenceWrapper", "params": vae}}}}


def randomize(model, torch, seed: int) -> None:
    """Zero-initialised layers (sgm's zero_module: proj_out, the UNet's output) get random weights, or the
    cross-attention (where a hypernetwork acts) would not reach the output; norm layers get random affine
    parameters, or webui's emphasis step (which restores the conditioning's mean) divides by a zero mean."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.dim() > 1 and not weight.any():
                weight.copy_(torch.randn(weight.shape, generator=gen) * 0.02)
            if isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm)) and module.weight is not None:
                module.weight.add_(0.1 * torch.randn(module.weight.shape, generator=gen))
                module.bias.add_(0.1 * torch.randn(module.bias.shape, generator=gen))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--harness", required=True, help="the webui harness folder (../shared/webui-harness/)")
    parser.add_argument("--out", help="folder for tiny-sdxl.safetensors/.yaml (default: webui's models folder)")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    harness = os.path.abspath(args.harness)
    os.environ.setdefault("HF_HOME", os.path.join(harness, "hf_home"))
    os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"
    sys.path.insert(0, os.path.join(harness, "webui", "repositories", "generative-models"))
    import pytorch_lightning
    import torch
    if "pytorch_lightning.utilities.distributed" not in sys.modules:   # as webui's initialize_util does
        sys.modules["pytorch_lightning.utilities.distributed"] = pytorch_lightning.utilities.rank_zero
    from omegaconf import OmegaConf
    from safetensors.torch import save_file
    from sgm.util import instantiate_from_config

    out = os.path.abspath(args.out or os.path.join(harness, "webui", "models", "Stable-diffusion"))
    os.makedirs(out, exist_ok=True)
    config = OmegaConf.create(tiny_sdxl_yaml())
    torch.manual_seed(args.seed)
    with contextlib.redirect_stdout(sys.stderr):   # sgm prints its layer plan
        model = instantiate_from_config(config.model)
    randomize(model, torch, args.seed)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    missing = [key for key in LAYOUT_KEYS if key not in state]
    if missing or state[LAYOUT_KEYS[2]].shape[1] != 4:
        print(f"the state dict lacks {missing}: webui would not load it as SDXL", file=sys.stderr)
        return 1
    ckpt, yaml = os.path.join(out, "tiny-sdxl.safetensors"), os.path.join(out, "tiny-sdxl.yaml")
    save_file(state, ckpt + ".tmp")
    os.replace(ckpt + ".tmp", ckpt)
    OmegaConf.save(config, yaml)
    unet = sum(v.numel() for k, v in state.items() if k.startswith("model.diffusion_model."))
    print(f"wrote {ckpt} ({len(state)} tensors, UNet {unet:,} parameters) and {yaml}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
