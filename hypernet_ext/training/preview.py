"""Small pictures of a run without a UI: a deterministic DDIM sampler over any HostModel, image grids, and a
loss plot (drawn with PIL by training.plots, no matplotlib). The sampler uses the host's predict, noise
schedule and parameterisation (eps or v), draws its start noise from a local generator, and takes no guidance.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
from PIL import Image, ImageDraw

from ..data.buckets import SizeCond
from .prompts import conditioning
from .step import autocast


@torch.no_grad()
def ddim_sample(host, prompts: Sequence[str], latent_hw: Tuple[int, int], steps: int = 10, seed: int = 0,
                channels: int = 4, autocast_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Scaled latents (B, C, h, w) for ``prompts`` after ``steps`` deterministic DDIM steps (eta 0)."""
    alphas = host.alphas_cumprod.double()
    total = len(alphas)
    timesteps = torch.linspace(total - 1, 0, steps).round().long().tolist()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((len(prompts), channels) + tuple(latent_hw), generator=gen, dtype=torch.float64)
    height, width = (side * 8 for side in latent_hw)   # SD's VAEs scale by 8
    cond = conditioning(host, prompts, [SizeCond((height, width), (0, 0), (height, width))] * len(prompts))
    for i, t in enumerate(timesteps):
        a_t = alphas[t]
        a_prev = alphas[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.tensor(1.0, dtype=torch.float64)
        t_batch = torch.full((len(prompts),), t, dtype=torch.long)
        with autocast(host.device, autocast_dtype):
            out = host.predict(x.float(), t_batch, cond)
        out = out.double().cpu()
        if host.parameterization == "v":
            x0 = a_t.sqrt() * x - (1 - a_t).sqrt() * out
            eps = (1 - a_t).sqrt() * x + a_t.sqrt() * out
        else:
            eps = out
            x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x.float()


def to_images(pixels: torch.Tensor) -> List[Image.Image]:
    """PIL images from pixels (B, 3, H, W) in [-1, 1]."""
    array = ((pixels.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(a.permute(1, 2, 0).numpy(), "RGB") for a in array]


def image_grid(rows: Sequence[Sequence[Image.Image]], labels: Sequence[str] = (), scale: int = 2,
               pad: int = 4, column_labels: Sequence[str] = ()) -> Image.Image:
    """Rows of equally sized images in one picture, each row with an optional label on its left and each column
    with an optional label above it."""
    width, height = rows[0][0].size
    width, height = width * scale, height * scale
    label_w = 8 + 7 * max((len(s) for s in labels), default=0) if labels else 0
    top_h = 18 if column_labels else 0
    columns = max(len(r) for r in rows)
    grid = Image.new("RGB", (label_w + columns * (width + pad) + pad, top_h + len(rows) * (height + pad) + pad),
                     "white")
    draw = ImageDraw.Draw(grid)
    for c, text in enumerate(column_labels):
        draw.text((label_w + pad + c * (width + pad), 4), text, fill="black")
    for r, row in enumerate(rows):
        top = top_h + pad + r * (height + pad)
        if r < len(labels):
            draw.text((4, top + height // 2 - 6), labels[r], fill="black")
        for c, image in enumerate(row):
            grid.paste(image.resize((width, height), Image.NEAREST), (label_w + pad + c * (width + pad), top))
    return grid


def loss_plot(steps: Sequence[float], losses: Sequence[float], size: Tuple[int, int] = (640, 360),
              title: str = "loss") -> Image.Image:
    """Loss per step (grey) and its running mean (blue) on linear axes, with min/max labels."""
    from .plots import BLUE, GREY, Panel, Series, chart, running_mean

    points = [(s, v) for s, v in zip(steps, losses) if math.isfinite(v)]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    smooth = running_mean(ys, max(1, len(ys) // 10))
    return chart([Panel([Series(xs, ys, GREY), Series(xs, smooth, BLUE, 2)], title)], size)
