"""Stand-in of sgm/modules/diffusionmodules/openaimodel.py: ldm's UNetModel with sgm's vector conditioning.

sgm's UNetModel is ldm's with extra options. SDXL uses ``num_classes: sequential``: a vector ``y`` (B,
adm_in_channels) goes through ``label_emb`` (Linear, SiLU, Linear) and is added to the timestep embedding; and
one transformer depth per level (``transformer_depth: [1, 2, 10]``). The stand-in builds ldm's UNet, adds that
input (ldm's forward already adds ``label_emb(y)`` when num_classes is set, as sgm's does) and gives each level's
spatial transformers their depth and sgm's forward (one context for every block).
"""
import copy

import torch.nn as nn
from ldm.modules.diffusionmodules import openaimodel as ldm_openaimodel
from ldm.modules.diffusionmodules.openaimodel import ResBlock, TimestepEmbedSequential  # noqa: F401

from ..attention import SpatialTransformer
from .util import linear, timestep_embedding


class Timestep(nn.Module):
    """(sgm/modules/diffusionmodules/openaimodel.py: Timestep) sinusoidal embedding of a number."""

    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, t):
        return timestep_embedding(t, self.dim)


class UNetModel(ldm_openaimodel.UNetModel):
    """(sgm/modules/diffusionmodules/openaimodel.py: UNetModel) with num_classes int, 'continuous' or
    'sequential'; transformer_depth an int or one depth per level; no image_size (ldm's is unused)."""

    def __init__(self, in_channels, model_channels, out_channels, num_res_blocks, attention_resolutions, *,
                 channel_mult=(1, 2, 4, 8), num_classes=None, adm_in_channels=None, transformer_depth=1,
                 transformer_depth_middle=None, spatial_transformer_attn_type="softmax",
                 use_fairscale_checkpoint=False, offload_to_cpu=False, **kwargs):
        depths = [transformer_depth] * len(channel_mult) if isinstance(transformer_depth, int) \
            else list(transformer_depth)
        middle = depths[-1] if transformer_depth_middle is None else transformer_depth_middle
        sequential = num_classes == "sequential"
        super().__init__(32, in_channels, model_channels, out_channels, num_res_blocks, attention_resolutions,
                         channel_mult=channel_mult, num_classes=None if sequential else num_classes,
                         transformer_depth=1, **kwargs)
        self._set_depths(depths, middle, channel_mult)
        if sequential:
            if adm_in_channels is None:
                raise ValueError("num_classes 'sequential' needs adm_in_channels")
            time_embed_dim = model_channels * 4
            self.num_classes = num_classes
            self.label_emb = nn.Sequential(nn.Sequential(linear(adm_in_channels, time_embed_dim), nn.SiLU(),
                                                         linear(time_embed_dim, time_embed_dim)))

    def _set_depths(self, depths, middle, channel_mult):
        """Give the spatial transformers of each level ``depths[level]`` blocks (sgm builds them so)."""
        levels = len(channel_mult)
        res = self.num_res_blocks if isinstance(self.num_res_blocks, (list, tuple)) else [self.num_res_blocks] * levels
        blocks, index = list(self.input_blocks), 1
        for level in range(levels):
            for _ in range(res[level]):
                _deepen(blocks[index], depths[level])
                index += 1
            index += level != levels - 1   # the downsampling block
        _deepen(self.middle_block, middle)
        index = 0
        for level in reversed(range(levels)):
            for _ in range(res[level] + 1):
                _deepen(self.output_blocks[index], depths[level])
                index += 1


def _deepen(block, depth):
    for module in block:
        if isinstance(module, ldm_openaimodel.SpatialTransformer):
            module.__class__ = SpatialTransformer   # ldm's built it; sgm's forward (one context for every block)
            if len(module.transformer_blocks) != depth:
                first = module.transformer_blocks[0]
                module.transformer_blocks = nn.ModuleList([copy.deepcopy(first) for _ in range(depth)])
