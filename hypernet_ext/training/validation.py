"""The validation loss: a fixed set of images, each at fixed timesteps with fixed noise, evaluated without gradients.

Owns where the images come from (a held-out part of the data set, a folder of their own, or the training images
themselves), the set fixed once (latents, one prompt each, timesteps spread over the schedule, noise from the
validation seed) and one evaluation: the loss, and per width the effect size (mean |f(x)| / |x| over the contexts
the network saw) and the weight norm. It draws only from its own generators inside a forked RNG, in eval mode,
so validating never changes the training run and the same weights always give the same numbers.
"""
from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..data.captions import make_prompt
from ..data.dataset import LatentDataset, generator, mix_seed
from ..errors import DataError
from .config import ValidationConfig
from .prompts import conditioning
from .step import add_noise, autocast, cuda_devices, diffusion_loss, diffusion_target

logger = logging.getLogger(__name__)


@dataclass
class ValidationResult:
    """One evaluation: the loss, and per attention width the effect size and the weight norm."""
    step: int
    loss: float
    effect: Dict[int, float] = field(default_factory=dict)        # width -> mean |f(x)| / |x|
    weight_norm: Dict[int, float] = field(default_factory=dict)   # width -> L2 norm of the k and v weights

    @property
    def max_effect(self) -> Tuple[Optional[int], float]:
        """(width, effect size) of the width the network changes most."""
        if not self.effect:
            return None, 0.0
        width = max(self.effect, key=lambda w: self.effect[w])
        return width, self.effect[width]

    def cells(self) -> Dict[str, object]:
        """Loss-log cells: val_loss, effect (the largest), weight_norm (all widths), and per width."""
        total = math.sqrt(sum(v * v for v in self.weight_norm.values()))
        cells = {"val_loss": f"{self.loss:.7f}", "effect": f"{self.max_effect[1]:.6g}", "weight_norm": f"{total:.6g}"}
        cells.update({f"effect_{w}": f"{v:.6g}" for w, v in self.effect.items()})
        cells.update({f"weight_norm_{w}": f"{v:.6g}" for w, v in self.weight_norm.items()})
        return cells


@dataclass
class _Item:
    path: str
    latent: torch.Tensor             # (C, h, w), scaled, CPU
    prompt: str
    weight: Optional[torch.Tensor]   # (1, h, w) alpha loss weight, or None
    noise: torch.Tensor              # (T, C, h, w): one fixed draw per timestep
    size: Optional[object] = None    # the image's SizeCond (SDXL's size conditioning), unflipped


class ValidationSet:
    """Images fixed for a whole run; ``evaluate`` gives the same number for the same weights, every time."""

    def __init__(self, items: Sequence[_Item], timesteps: torch.Tensor, source: str):
        if not items:
            raise DataError("validation: no images to validate on")
        self.items = list(items)
        self.timesteps = timesteps
        self.source = source

    @classmethod
    def from_samples(cls, samples, template_lines: Sequence[str], name: str, scale_factor: float,
                     config: ValidationConfig, num_timesteps: int, source: str = "") -> "ValidationSet":
        """At most ``config.max_images`` of ``samples`` (a fixed choice), unflipped, each with one prompt (a
        template line drawn once, tags as written) and ``config.timesteps`` timesteps spread evenly over the
        schedule, with noise drawn from the validation seed."""
        chosen = _choose(sorted(samples, key=lambda s: s.path), config.max_images, config.seed, "images")
        count = config.timesteps
        timesteps = torch.tensor([min(num_timesteps - 1, int((j + 0.5) * num_timesteps / count))
                                  for j in range(count)], dtype=torch.long)
        items = []
        for index, sample in enumerate(chosen):
            rng = random.Random(mix_seed(config.seed, "validation-prompt", index))
            prompt = make_prompt(list(template_lines), name, sample.caption, False, 0.0, rng)
            latent = sample.latents[0].mean * scale_factor   # the VAE mean for 'random' sampling: no draw
            noise = torch.randn((count,) + tuple(latent.shape),
                                generator=generator(config.seed, "validation-noise", index))
            size = sample.sizes[0] if getattr(sample, "sizes", ()) else None
            items.append(_Item(sample.path, latent, prompt, sample.weight, noise, size))
        return cls(items, timesteps, source or f"{len(items)} images")

    def evaluate(self, host, network, step: int = 0, autocast_dtype: Optional[torch.dtype] = None
                 ) -> ValidationResult:
        """The mean loss over images and timesteps, and the effect size and weight norm per width; the
        network is in eval mode meanwhile (no dropout) and no gradient is recorded."""
        alphas = host.alphas_cumprod.detach().float().cpu()
        device = torch.device(host.device)
        was_training = network.training
        network.eval()
        meter = _EffectMeter(network)
        total = 0.0
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=cuda_devices(device)):
                for item in self.items:
                    total += self._loss(item, host, alphas, device, autocast_dtype)
        finally:
            meter.remove()
            network.train(was_training)
        return ValidationResult(step, total / len(self.items), meter.means(), weight_norms(network))

    def _loss(self, item: _Item, host, alphas, device, autocast_dtype) -> float:
        count = len(self.timesteps)
        latents = item.latent.unsqueeze(0).expand(count, *item.latent.shape).to(device, torch.float32)
        t = self.timesteps.to(device)
        noise = item.noise.to(device)
        x_noisy = add_noise(latents, noise, alphas, t)
        target = diffusion_target(latents, noise, alphas, t, host.parameterization)
        with autocast(device, autocast_dtype):
            cond = conditioning(host, [item.prompt] * count, [item.size] * count if item.size else None)
            prediction = host.predict(x_noisy, t, cond)
        weights = None if item.weight is None else item.weight.unsqueeze(0).expand(count, *item.weight.shape)
        return float(diffusion_loss(prediction, target, weights))

    def __len__(self) -> int:
        return len(self.items)

    @property
    def paths(self) -> List[str]:
        return [item.path for item in self.items]


class _EffectMeter:
    """Forward hooks on the network's k and v modules summing |out - x| / |x| per token, per width."""

    def __init__(self, network):
        self.sums: Dict[int, List[float]] = {}
        self.handles = []
        for width, k, v in network.pairs():
            self.sums[width] = [0.0, 0]
            for module in (k, v):
                self.handles.append(module.register_forward_hook(self._hook(width)))

    def _hook(self, width: int):
        def record(module, args, output):
            x = args[0].detach().double()
            change = output.detach().double() - x
            size = x.norm(dim=-1)
            keep = size > 0
            ratio = change.norm(dim=-1)[keep] / size[keep]
            self.sums[width][0] += float(ratio.sum())
            self.sums[width][1] += int(ratio.numel())
        return record

    def means(self) -> Dict[int, float]:
        return {w: (s / n if n else 0.0) for w, (s, n) in self.sums.items()}

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


def weight_norms(network) -> Dict[int, float]:
    """Per width, the L2 norm of every weight of its k and v modules together."""
    norms = {}
    with torch.no_grad():
        for width, k, v in network.pairs():
            squares = sum(float(p.detach().double().pow(2).sum()) for m in (k, v) for p in m.parameters())
            norms[width] = math.sqrt(squares)
    return norms


def _choose(items: list, count: int, seed: int, what: str) -> list:
    """``count`` of ``items`` drawn from (seed, what), in their given order; all of them when there are fewer."""
    if len(items) <= count:
        return list(items)
    keep = set(random.Random(mix_seed(seed, "validation-choice", what)).sample(range(len(items)), count))
    return [item for i, item in enumerate(items) if i in keep]


def held_out_count(split: float, total: int) -> int:
    """Images ``split`` holds out of ``total``: a fraction (rounded, at least 1) or a count."""
    if split <= 0:
        return 0
    return max(1, round(split * total)) if split < 1 else int(split)


def build_validation(config: ValidationConfig, dataset, host) -> Tuple[Optional[ValidationSet], object, str]:
    """(validation set, training data set, what was done) for a run: a folder of its own, a held-out part
    (the training data set then loses those images) or the training images themselves. A held-out part that
    would leave no training image falls back to the training images, and the text says so."""
    if not config.every:
        return None, dataset, ""
    if not isinstance(dataset, LatentDataset):
        raise DataError(f"validation: needs a LatentDataset (from prepare_dataset), got {type(dataset).__name__}")
    num_timesteps = len(host.alphas_cumprod)
    data = dataset.config
    samples, lines, source = dataset.samples, dataset.template_lines, "the training images themselves"
    train = dataset
    if config.data_dir:
        from ..data import prepare_dataset

        other = prepare_dataset(data.replace(data_dir=config.data_dir, flip=0.0, repeats=1), host.encode_images,
                                dataset.scale_factor, model_id=str(getattr(host, "model_id", "") or ""))
        samples, lines, source = other.samples, other.template_lines, f"the images of {config.data_dir}"
    elif config.split:
        count = held_out_count(config.split, len(samples))
        if count >= len(samples):
            source = (f"the training images themselves: holding out {count} of {len(samples)} images would "
                      "leave none to train on")
        else:
            ordered = sorted(samples, key=lambda s: s.path)
            held = set(id(s) for s in _choose(ordered, count, config.seed, "split"))
            kept = [s for s in samples if id(s) not in held]
            samples = [s for s in ordered if id(s) in held]
            train = LatentDataset(data, kept, dataset.template_lines, dataset.scale_factor, dataset.summary)
            source = f"{count} held-out images (training on the other {len(kept)})"
    chosen = ValidationSet.from_samples(samples, lines, data.name, dataset.scale_factor, config, num_timesteps,
                                        source)
    text = (f"validation every {config.every} steps on {source}: {len(chosen)} images x "
            f"{len(chosen.timesteps)} timesteps {chosen.timesteps.tolist()}")
    return chosen, train, text
