"""Stand-in of sgm/models/diffusion.py: DiffusionEngine, the model class of SDXL's yaml.

Attributes as sgm sets them: ``model`` (the UNet wrapper; the UNet is ``model.diffusion_model``), ``denoiser``,
``conditioner``, ``first_stage_model`` (frozen, train() disabled), ``scale_factor``,
``disable_first_stage_autocast``; ``encode_first_stage`` gives scaled latents, ``decode_first_stage`` pixels.
Training-only members (loss, sampler, EMA, optimizers) are left out.
"""
from typing import Dict, List, Union

import pytorch_lightning as pl
import torch
from omegaconf import ListConfig, OmegaConf

from ..modules import UNCONDITIONAL_CONFIG
from ..modules.diffusionmodules.wrappers import OPENAIUNETWRAPPER
from ..util import default, disabled_train, get_obj_from_str, instantiate_from_config


class DiffusionEngine(pl.LightningModule):
    """(sgm/models/diffusion.py: DiffusionEngine)"""

    def __init__(self, network_config, denoiser_config, first_stage_config,
                 conditioner_config: Union[None, Dict, ListConfig, OmegaConf] = None,
                 sampler_config=None, optimizer_config=None, scheduler_config=None, loss_fn_config=None,
                 network_wrapper: Union[None, str] = None, ckpt_path: Union[None, str] = None, use_ema: bool = False,
                 ema_decay_rate: float = 0.9999, scale_factor: float = 1.0, disable_first_stage_autocast=False,
                 input_key: str = "jpg", log_keys: Union[List, None] = None, no_cond_log: bool = False,
                 compile_model: bool = False):
        super().__init__()
        if use_ema or sampler_config is not None or loss_fn_config is not None or ckpt_path is not None:
            raise NotImplementedError("the sgm stand-in builds inference models only")
        self.log_keys = log_keys
        self.input_key = input_key
        self.optimizer_config = default(optimizer_config, {"target": "torch.optim.AdamW"})
        model = instantiate_from_config(network_config)
        self.model = get_obj_from_str(default(network_wrapper, OPENAIUNETWRAPPER))(model, compile_model=compile_model)
        self.denoiser = instantiate_from_config(denoiser_config)
        self.sampler = None
        self.conditioner = instantiate_from_config(default(conditioner_config, UNCONDITIONAL_CONFIG))
        self.scheduler_config = scheduler_config
        self._init_first_stage(first_stage_config)
        self.loss_fn = None
        self.use_ema = use_ema
        self.scale_factor = scale_factor
        self.disable_first_stage_autocast = disable_first_stage_autocast
        self.no_cond_log = no_cond_log

    def _init_first_stage(self, config):
        model = instantiate_from_config(config).eval()
        model.train = disabled_train
        for param in model.parameters():
            param.requires_grad = False
        self.first_stage_model = model

    def get_input(self, batch):
        return batch[self.input_key]

    @torch.no_grad()
    def decode_first_stage(self, z):
        z = 1.0 / self.scale_factor * z
        with torch.autocast("cuda", enabled=not self.disable_first_stage_autocast):
            return self.first_stage_model.decode(z)

    @torch.no_grad()
    def encode_first_stage(self, x):
        with torch.autocast("cuda", enabled=not self.disable_first_stage_autocast):
            z = self.first_stage_model.encode(x)
        return self.scale_factor * z
