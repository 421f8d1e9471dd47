"""Stand-in for webui v1.10.1 modules/processing.py: txt2img on the loaded model.

Same flow as webui's process_images / process_images_inner: reload the checkpoint the setting names, parse the
extra networks out of the prompt and activate them (unless disable_extra_networks), condition, sample, decode,
write the infotext, deactivate. The sampler is a plain DDIM loop with classifier-free guidance whatever
sampler_name says (conditioning dicts, as SDXL's, are concatenated key by key, as webui's CFG denoiser does); its
start noise comes from the global torch RNG seeded with the seed, as webui's rng.py does on a CPU.
"""
import random
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from modules import devices, extra_networks, prompt_parser, sd_models, shared


@dataclass(repr=False)
class StableDiffusionProcessing:
    """(modules/processing.py: StableDiffusionProcessing), the fields the glue and its tests use."""
    sd_model: object = None
    outpath_samples: str = None
    outpath_grids: str = None
    prompt: str = ""
    negative_prompt: str = ""
    styles: list = None
    seed: int = -1
    sampler_name: str = None
    scheduler: str = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    extra_generation_params: dict = None
    override_settings: dict = None
    disable_extra_networks: bool = False
    all_prompts: list = field(default=None, init=False)
    all_negative_prompts: list = field(default=None, init=False)
    all_seeds: list = field(default=None, init=False)
    prompts: list = field(default=None, init=False)
    negative_prompts: list = field(default=None, init=False)
    seeds: list = field(default=None, init=False)
    extra_network_data: dict = field(default=None, init=False)
    sd_model_hash: str = field(default=None, init=False)
    comments: dict = None

    def __post_init__(self):
        self.comments = {}
        self.extra_generation_params = self.extra_generation_params or {}
        self.override_settings = self.override_settings or {}

    def parse_extra_network_prompts(self):
        """(StableDiffusionProcessing.parse_extra_network_prompts)"""
        self.prompts, self.extra_network_data = extra_networks.parse_prompts(self.prompts)

    def close(self):
        """(StableDiffusionProcessing.close)"""


@dataclass(repr=False)
class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    """(modules/processing.py: StableDiffusionProcessingTxt2Img) without hires fix."""
    enable_hr: bool = False
    denoising_strength: float = 0.75


class Processed:
    """(modules/processing.py: Processed)"""

    def __init__(self, p, images_list, seed=-1, info="", subseed=None, all_prompts=None, all_negative_prompts=None,
                 all_seeds=None, all_subseeds=None, index_of_first_image=0, infotexts=None, comments=""):
        self.images = images_list
        self.prompt = p.prompt
        self.seed = seed
        self.info = info
        self.infotexts = infotexts or [info]
        self.extra_generation_params = p.extra_generation_params


def create_infotext(p, all_prompts, all_seeds, all_subseeds, comments=None, iteration=0, position_in_batch=0,
                    use_main_prompt=False, index=None, all_negative_prompts=None):
    """Prompt, negative prompt and "key: value" parameters (modules/processing.py: create_infotext)."""
    index = position_in_batch + iteration * p.batch_size
    params = {"Steps": p.steps, "Sampler": p.sampler_name, "CFG scale": p.cfg_scale, "Seed": all_seeds[index],
              "Size": f"{p.width}x{p.height}", "Model hash": p.sd_model_hash, **p.extra_generation_params}
    text = ", ".join(f"{k}: {v}" for k, v in params.items() if v is not None)
    return f"{all_prompts[index]}\nNegative prompt: {p.negative_prompt}\n{text}".strip()


def _sample(model, c, uc, seed_list, steps, cfg_scale, shape):
    alphas = model.alphas_cumprod.detach().double().cpu()
    timesteps = torch.linspace(len(alphas) - 1, 0, steps).round().long().tolist()
    noise = []
    for seed in seed_list:
        torch.manual_seed(seed)   # webui's rng.randn on a CPU seeds the global generator
        noise.append(torch.randn(shape))
    x = torch.stack(noise).double()
    for i, t in enumerate(timesteps):
        a_t = alphas[t]
        a_prev = alphas[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.tensor(1.0, dtype=torch.float64)
        t_in = torch.full((2 * x.shape[0],), t, dtype=torch.long)
        cond = {k: torch.cat([uc[k], c[k]]) for k in c} if isinstance(c, dict) else torch.cat([uc, c])
        out = model.apply_model(torch.cat([x, x]).float(), t_in, cond).double()
        eps_uc, eps_c = out.chunk(2)
        eps = eps_uc + cfg_scale * (eps_c - eps_uc)
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        shared.state.sampling_step = i + 1
        if shared.state.interrupted:
            break
    return x.float()


def process_images(p: StableDiffusionProcessing) -> Processed:
    """(modules/processing.py: process_images and process_images_inner)"""
    sd_models.reload_model_weights()
    model = shared.sd_model
    p.sd_model_hash = model.sd_model_hash
    seed = p.seed if p.seed != -1 else int(random.randrange(4294967294))
    count = p.batch_size * p.n_iter
    p.all_prompts, p.all_negative_prompts = [p.prompt] * count, [p.negative_prompt] * count
    p.all_seeds = [seed + i for i in range(count)]
    if shared.state.job_count == -1:
        shared.state.job_count = p.n_iter
    images, infotexts = [], []
    with torch.no_grad():
        for n in range(p.n_iter):
            if shared.state.interrupted:
                break
            batch = slice(n * p.batch_size, (n + 1) * p.batch_size)
            p.prompts, p.negative_prompts, p.seeds = p.all_prompts[batch], p.all_negative_prompts[batch], \
                p.all_seeds[batch]
            p.parse_extra_network_prompts()
            if not p.disable_extra_networks:
                with devices.autocast():
                    extra_networks.activate(p, p.extra_network_data)
            shared.state.sampling_steps = p.steps
            c = model.get_learned_conditioning(prompt_parser.SdConditioning(p.prompts, width=p.width,
                                                                            height=p.height))
            uc = model.get_learned_conditioning(prompt_parser.SdConditioning(p.negative_prompts, width=p.width,
                                                                             height=p.height, is_negative_prompt=True))
            latents = _sample(model, c, uc, p.seeds, p.steps, p.cfg_scale, (4, p.height // 8, p.width // 8))
            pixels = model.decode_first_stage(latents).clamp(-1, 1)
            for i, pixel in enumerate(pixels):
                array = ((pixel.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
                images.append(Image.fromarray(array))
                infotexts.append(create_infotext(p, p.all_prompts, p.all_seeds, [], iteration=n, position_in_batch=i))
            shared.state.nextjob()
    if not p.disable_extra_networks and p.extra_network_data:
        extra_networks.deactivate(p, p.extra_network_data)
    return Processed(p, images, seed=seed, info=infotexts[0] if infotexts else "", infotexts=infotexts)


