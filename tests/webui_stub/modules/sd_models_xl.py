"""Stand-in for webui v1.10.1 modules/sd_models_xl.py: what webui adds to sgm's DiffusionEngine (at import, on the
class, as webui does) so that SDXL looks like SD1 to the rest of webui."""
import sgm.models.diffusion
import sgm.modules.diffusionmodules.denoiser_scaling
import sgm.modules.diffusionmodules.discretizer
import torch

from modules import devices, shared


def get_learned_conditioning(self, batch):
    """(modules/sd_models_xl.py: get_learned_conditioning) the conditioner's dict for prompts at the batch's size
    (an SdConditioning's width and height, else 1024), crop from the settings."""
    for embedder in self.conditioner.embedders:
        embedder.ucg_rate = 0.0
    width = getattr(batch, "width", 1024) or 1024
    height = getattr(batch, "height", 1024) or 1024
    is_negative_prompt = getattr(batch, "is_negative_prompt", False)
    aesthetic_score = shared.opts.sdxl_refiner_low_aesthetic_score if is_negative_prompt else \
        shared.opts.sdxl_refiner_high_aesthetic_score
    args = dict(device=devices.device, dtype=devices.dtype)
    sdxl_conds = {
        "txt": batch,
        "original_size_as_tuple": torch.tensor([height, width], **args).repeat(len(batch), 1),
        "crop_coords_top_left": torch.tensor([shared.opts.sdxl_crop_top, shared.opts.sdxl_crop_left],
                                             **args).repeat(len(batch), 1),
        "target_size_as_tuple": torch.tensor([height, width], **args).repeat(len(batch), 1),
        "aesthetic_score": torch.tensor([aesthetic_score], **args).repeat(len(batch), 1),
    }
    force_zero_negative_prompt = is_negative_prompt and all(x == "" for x in batch)
    return self.conditioner(sdxl_conds, force_zero_embeddings=["txt"] if force_zero_negative_prompt else [])


def apply_model(self, x, t, cond):
    """(modules/sd_models_xl.py: apply_model) the UNet through sgm's wrapper (inpainting models: with the
    masked image's channels)."""
    if self.is_sdxl_inpaint:
        x = torch.cat([x] + cond["c_concat"], dim=1)
    return self.model(x, t, cond)


def get_first_stage_encoding(self, x):
    """(modules/sd_models_xl.py: get_first_stage_encoding) encode_first_stage already did everything."""
    return x


sgm.models.diffusion.DiffusionEngine.get_learned_conditioning = get_learned_conditioning
sgm.models.diffusion.DiffusionEngine.apply_model = apply_model
sgm.models.diffusion.DiffusionEngine.get_first_stage_encoding = get_first_stage_encoding


def extend_sdxl(model):
    """(modules/sd_models_xl.py: extend_sdxl) the attributes webui's SD1 code paths read."""
    dtype = next(model.model.diffusion_model.parameters()).dtype
    model.model.diffusion_model.dtype = dtype
    model.model.conditioning_key = "crossattn"
    model.cond_stage_key = "txt"
    model.parameterization = "v" if isinstance(model.denoiser.scaling,
                                               sgm.modules.diffusionmodules.denoiser_scaling.VScaling) else "eps"
    discretization = sgm.modules.diffusionmodules.discretizer.LegacyDDPMDiscretization()
    model.alphas_cumprod = torch.asarray(discretization.alphas_cumprod, device=devices.device, dtype=torch.float32)
    model.conditioner.wrapped = torch.nn.Module()
