"""SDXL's size conditioning, spliced into text conditioning that was computed (and cached) once per prompt.

sgm's GeneralConditioner (sgm/modules/encoders/modules.py) concatenates the 2-D outputs of its embedders into
``vector`` in embedder order: first the text embedders' pooled embedding, then one ConcatTimestepEmbedderND each
for original size, crop corner and target size (and the refiner's aesthetic score). The text part depends on the
prompt only; the rest depends on the image. ``SizeConditioner`` recomputes that rest with the model's own
embedders for each image's SizeCond and puts it after the cached text part. ``vae_moments`` reads the VAE's
posterior (sgm's encode_first_stage gives a scaled sample). Duck-typed: no sgm import.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import nn

from .data.buckets import SizeCond
from .errors import ConfigError

TEXT_KEY = "txt"
SIZE_KEYS = {"original_size_as_tuple": "original", "crop_coords_top_left": "crop", "target_size_as_tuple": "target"}
DEFAULT_SIZE = SizeCond((1024, 1024), (0, 0), (1024, 1024))   # what SDXL generates by default (webui's too)
AESTHETIC_SCORE = 6.0   # sgm's sampling default for the refiner's high score (webui: an option)


def size_inputs(sizes: Sequence[SizeCond], device=None, dtype=torch.float32) -> Dict[str, torch.Tensor]:
    """The conditioner's batch entries for ``sizes``: key -> (B, 2) tensor, as sgm's data pipeline gives them."""
    out = {}
    for key, part in SIZE_KEYS.items():
        out[key] = torch.tensor([list(getattr(size, part)) for size in sizes], device=device, dtype=dtype)
    return out


def _key(embedder) -> Optional[str]:
    return getattr(embedder, "input_key", None)


class SizeConditioner:
    """Recomputes the image-dependent part of ``vector`` for an sgm GeneralConditioner (see the module docstring).

    ``extra`` gives the inputs of other non-text embedders (the refiner's ``aesthetic_score``), one value per
    image. Raises ConfigError when the conditioner's layout is not one hypernet_ext knows.
    """

    def __init__(self, conditioner, extra: Optional[Dict[str, float]] = None):
        embedders = list(getattr(conditioner, "embedders", ()))
        keys = [_key(e) for e in embedders]
        text = [i for i, key in enumerate(keys) if key == TEXT_KEY]
        if not text:
            raise ConfigError("the model's conditioner has no text embedder (input_key 'txt'); hypernet_ext trains "
                              "text-conditioned SDXL models")
        self.extra = {"aesthetic_score": AESTHETIC_SCORE, **(extra or {})}
        self.trailing = embedders[text[-1] + 1:]
        if any(key == TEXT_KEY for key in keys[text[-1] + 1:]) or any(k != TEXT_KEY for k in keys[:text[-1]]):
            raise ConfigError(f"the model's conditioner mixes text and other embedders ({keys}); hypernet_ext knows "
                              "SDXL's layout: text embedders first, then size (and aesthetic score) embedders")
        unknown = [_key(e) for e in self.trailing if _key(e) not in SIZE_KEYS and _key(e) not in self.extra]
        if unknown:
            raise ConfigError(f"the model's conditioner has embedders for {unknown}, which hypernet_ext cannot fill "
                              f"in; it knows {sorted(SIZE_KEYS) + sorted(self.extra)}")

    @property
    def active(self) -> bool:
        """True when some embedder depends on the image size (SDXL base and refiner: yes)."""
        return any(_key(e) in SIZE_KEYS for e in self.trailing)

    @torch.no_grad()
    def tail(self, sizes: Sequence[SizeCond], device, dtype) -> torch.Tensor:
        """The image-dependent part of ``vector`` (B, n) for ``sizes``."""
        inputs = size_inputs(sizes, device)
        for key, value in self.extra.items():
            inputs[key] = torch.full((len(sizes), 1), float(value), device=device)
        parts = []
        for embedder in self.trailing:
            out = embedder(inputs[_key(embedder)])
            if not isinstance(out, torch.Tensor) or out.dim() != 2:
                raise ConfigError(f"the conditioner's {_key(embedder)} embedder gave "
                                  f"{tuple(getattr(out, 'shape', ()))}; expected a vector (B, n) per image")
            parts.append(out.to(device, dtype))
        return torch.cat(parts, dim=1) if parts else torch.zeros(len(sizes), 0, device=device, dtype=dtype)

    def __call__(self, cond: dict, sizes: Optional[Sequence[SizeCond]]) -> dict:
        """``cond`` ({'crossattn', 'vector', ...}) with the image-dependent end of ``vector`` made for ``sizes``
        (one per row; None or empty: as it is)."""
        if not sizes or not isinstance(cond, dict) or "vector" not in cond:
            return cond
        vector = cond["vector"]
        if len(sizes) != vector.shape[0]:
            raise ConfigError(f"size conditioning: {len(sizes)} sizes for {vector.shape[0]} prompts")
        tail = self.tail(sizes, vector.device, vector.dtype)
        keep = vector.shape[1] - tail.shape[1]
        if keep < 0:
            raise ConfigError(f"size conditioning: the model's vector has {vector.shape[1]} values, fewer than the "
                              f"{tail.shape[1]} its size embedders give")
        return dict(cond, vector=torch.cat([vector[:, :keep], tail], dim=1))


def vae_moments(vae: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """cat(mean, logvar) from a KL autoencoder with ``encoder`` and ``quant_conv`` (sgm's and ldm's layout)."""
    if not (hasattr(vae, "encoder") and hasattr(vae, "quant_conv")):
        raise ConfigError(f"the model's VAE ({type(vae).__name__}) has no encoder and quant_conv; hypernet_ext reads "
                          "KL autoencoders (AutoencoderKL)")
    dtype = next(vae.parameters()).dtype
    moments = vae.quant_conv(vae.encoder(pixels.to(dtype)))
    mean, logvar = moments.float().chunk(2, dim=1)
    return torch.cat([mean, logvar.clamp(-30.0, 20.0)], dim=1)
