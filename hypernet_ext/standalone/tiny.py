"""Tiny random-weight ldm UNets, built in memory from ldm's real classes, for tests, demos and benchmarks.

ldm zero-initialises every SpatialTransformer's ``proj_out`` and the UNet's output conv, which makes a
hypernetwork's gradient exactly zero; ``rerandomize_zero_init`` gives those layers small random weights.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

# name -> (context_dim, model_channels, channel_mult, linear projections in the transformer, head channels)
UNET_PRESETS = {
    "sd1-tiny": dict(context_dim=768, model_channels=32, channel_mult=(1, 2), linear=False, head_channels=16),
    "sd2-tiny": dict(context_dim=1024, model_channels=32, channel_mult=(1, 2), linear=True, head_channels=16),
    "sd1-mid": dict(context_dim=768, model_channels=128, channel_mult=(1, 2, 4), linear=False, head_channels=32),
}


def tiny_unet(preset: str = "sd1-tiny", *, seed: int = 0, context_dim: Optional[int] = None,
              use_checkpoint: bool = False) -> nn.Module:
    """An ldm ``UNetModel`` with spatial transformers, random weights, no zero-initialised layers.

    ``use_checkpoint`` is ldm's own flag (True in the SD yamls); it does not change the weights drawn.
    """
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    p = dict(UNET_PRESETS[preset])
    if context_dim is not None:
        p["context_dim"] = context_dim
    n_levels = len(p["channel_mult"])
    torch_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)  # ldm draws init weights from the global RNG; restored below
        unet = UNetModel(
            image_size=32, in_channels=4, out_channels=4, model_channels=p["model_channels"],
            num_res_blocks=1, attention_resolutions=[2 ** i for i in range(n_levels)],
            channel_mult=list(p["channel_mult"]), num_head_channels=p["head_channels"],
            use_spatial_transformer=True, transformer_depth=1, context_dim=p["context_dim"],
            use_linear_in_transformer=p["linear"], legacy=False, use_checkpoint=use_checkpoint,
        )
        rerandomize_zero_init(unet, seed=seed)
    finally:
        torch.random.set_rng_state(torch_state)
    return unet.eval()


def rerandomize_zero_init(model: nn.Module, std: float = 0.02, seed: int = 0) -> nn.Module:
    """Give every all-zero weight (ldm's zero_module layers) N(0, std) values so gradients flow."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.dim() > 1 and not weight.any():
                weight.copy_(torch.randn(weight.shape, generator=gen) * std)
    return model
