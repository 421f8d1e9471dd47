"""make_grid: tile a batch of images (B, C, H, W) into one image, as torchvision does."""
import math

import torch


def make_grid(tensor, nrow=8, padding=2, normalize=False, value_range=None, scale_each=False, pad_value=0.0):
    if isinstance(tensor, (list, tuple)):
        tensor = torch.stack(list(tensor))
    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.shape[1] == 1:
        tensor = tensor.repeat(1, 3, 1, 1)
    if normalize:
        lo, hi = value_range if value_range is not None else (float(tensor.min()), float(tensor.max()))
        tensor = (tensor.clamp(lo, hi) - lo) / max(hi - lo, 1e-5)
    n, c, h, w = tensor.shape
    cols = min(nrow, n)
    rows = int(math.ceil(n / cols))
    grid = tensor.new_full((c, rows * (h + padding) + padding, cols * (w + padding) + padding), pad_value)
    for i in range(n):
        y, x = divmod(i, cols)
        top, left = y * (h + padding) + padding, x * (w + padding) + padding
        grid[:, top:top + h, left:left + w] = tensor[i]
    return grid
