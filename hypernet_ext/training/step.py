"""One optimizer step: the diffusion loss in the model's parameterisation, and the step's fixed order.

Order: forward under autocast, loss / accumulation, backward through the scaler, unscale, check for non-finite
values, clip, optimizer step, zero_grad(set_to_none=True). Timesteps, noise and dropout come from (seed, step),
so a step draws the same numbers in every run, resumed or not, and the caller's global RNG is left alone.
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import torch

from ..data.dataset import mix_seed
from ..errors import ConfigError
from .prompts import conditioning

logger = logging.getLogger(__name__)


def resolve_precision(requested: str, device: torch.device) -> Tuple[str, Optional[torch.dtype], Optional[str]]:
    """(mode, autocast dtype or None, note for the user) for ``requested`` on ``device``; fp32 on CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        note = None if requested in ("auto", "no") else f"mixed precision {requested} needs CUDA; training in fp32"
        return "no", None, note
    if requested == "auto":
        requested = "fp16"
    if requested == "bf16" and not torch.cuda.is_bf16_supported():
        return "fp16", torch.float16, "this GPU has no bf16 support; training with fp16 and a gradient scaler"
    return requested, {"fp16": torch.float16, "bf16": torch.bfloat16, "no": None}[requested], None


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """torch.autocast for ``dtype`` on CUDA; nothing otherwise."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def _gather(values: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """values[t] shaped (B, 1, 1, ...) for broadcasting over a tensor of ``ndim`` dimensions."""
    out = values.to(t.device)[t].float()
    return out.reshape(-1, *([1] * (ndim - 1)))


def add_noise(x0: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """q(x_t | x_0) = sqrt(a_t) x_0 + sqrt(1 - a_t) noise."""
    a = _gather(alphas_cumprod, t, x0.dim())
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def diffusion_target(x0: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor, t: torch.Tensor,
                     parameterization: str) -> torch.Tensor:
    """What the model predicts: the noise (eps), or the velocity alpha_t * noise - sigma_t * x0 (v)."""
    if parameterization == "eps":
        return noise
    if parameterization == "v":
        a = _gather(alphas_cumprod, t, x0.dim())
        return a.sqrt() * noise - (1 - a).sqrt() * x0
    raise ConfigError(f"parameterization {parameterization!r} is not supported; the trainer knows eps and v")


def min_snr_weights(alphas_cumprod: torch.Tensor, t: torch.Tensor, gamma: float,
                    parameterization: str) -> torch.Tensor:
    """Per-sample min-SNR-gamma weights (Hang et al. 2023): min(snr, gamma) / snr for eps, / (snr + 1) for v."""
    a = alphas_cumprod.to(t.device)[t].double()
    snr = a / (1 - a)
    clipped = torch.clamp(snr, max=gamma)
    weights = clipped / (snr + 1) if parameterization == "v" else clipped / snr
    return weights.float()


def diffusion_loss(prediction: torch.Tensor, target: torch.Tensor, weights: Optional[torch.Tensor] = None,
                   sample_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean squared error in float32; ``weights`` (B, 1, h, w) multiply the per-pixel loss, ``sample_weights``
    (B,) the per-sample loss."""
    loss = (prediction.float() - target.float()) ** 2
    if weights is not None:
        loss = loss * weights.to(loss.device, loss.dtype)
    loss = loss.mean(dim=tuple(range(1, loss.dim())))
    if sample_weights is not None:
        loss = loss * sample_weights.to(loss.device)
    return loss.mean()


def draw_noise(seed: int, index: int, shape: Sequence[int], num_timesteps: int,
               noise_offset: float = 0.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """(timesteps (B,), noise) for micro-batch ``index``: uniform timesteps, Gaussian noise plus the optional
    per-channel offset; drawn on the CPU from (seed, index) so every device and every run gets the same."""
    gen = torch.Generator().manual_seed(mix_seed(seed, "noise", index))
    t = torch.randint(0, num_timesteps, (shape[0],), generator=gen)
    noise = torch.randn(tuple(shape), generator=gen)
    if noise_offset:
        noise = noise + noise_offset * torch.randn((shape[0], shape[1]) + (1,) * (len(shape) - 2), generator=gen)
    return t, noise


NON_FINITE_LOSS = "non-finite loss"
NON_FINITE_GRADIENT = "non-finite gradient"
OVERFLOW = "loss-scale overflow"


@dataclass
class StepOutcome:
    """What one optimizer step did."""
    loss: float                       # mean over the micro-batches (NaN/inf when it was not finite)
    grad_norm: Optional[float]        # total gradient norm after unscaling, before clipping
    skipped: Optional[str] = None     # why no update was made: None, NON_FINITE_LOSS, NON_FINITE_GRADIENT, OVERFLOW
    loss_scale: Optional[float] = None   # skipped steps: the gradient scaler's scale after it (None: no scaler)

    @property
    def diverging(self) -> bool:
        """A skipped step that counts toward the divergence streak. An fp16 overflow (a finite loss whose
        scaled gradient overflowed) is the scaler calibrating its scale, until the scale falls below 1: then
        even the unscaled gradient overflows."""
        if self.skipped == OVERFLOW:
            return self.loss_scale is not None and self.loss_scale < 1.0
        return self.skipped is not None


def grad_scaler(precision: str, device: torch.device):
    """The step's gradient scaler: enabled for fp16 on CUDA, a no-op otherwise."""
    return torch.cuda.amp.GradScaler(enabled=precision == "fp16" and torch.device(device).type == "cuda")


class StepRunner:
    """Runs optimizer steps for ``params`` of a network attached to ``host`` (see the module docstring)."""

    def __init__(self, host: Any, params: List[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
                 precision: str = "no", autocast_dtype: Optional[torch.dtype] = None, grad_accum: int = 1,
                 seed: int = 0, min_snr_gamma: float = 0.0, noise_offset: float = 0.0, clip_mode: str = "none"):
        self.host = host
        self.params = params
        self.optimizer = optimizer
        self.device = torch.device(host.device)
        self.autocast_dtype = autocast_dtype
        self.scaler = grad_scaler(precision, self.device)
        self.grad_accum = grad_accum
        self.seed = seed
        self.min_snr_gamma = min_snr_gamma
        self.noise_offset = noise_offset
        self.clip_mode = clip_mode
        self.alphas_cumprod = host.alphas_cumprod.detach().float().cpu()
        self.parameterization = host.parameterization

    def loss(self, batch, index: int) -> torch.Tensor:
        """The loss of one micro-batch (``index`` = its position in the data stream), under autocast."""
        latents = batch.latents.to(self.device, torch.float32)
        t, noise = draw_noise(self.seed, index, latents.shape, len(self.alphas_cumprod), self.noise_offset)
        t, noise = t.to(self.device), noise.to(self.device)
        x_noisy = add_noise(latents, noise, self.alphas_cumprod, t)
        target = diffusion_target(latents, noise, self.alphas_cumprod, t, self.parameterization)
        sample_weights = None
        if self.min_snr_gamma > 0:
            sample_weights = min_snr_weights(self.alphas_cumprod, t, self.min_snr_gamma, self.parameterization)
        with autocast(self.device, self.autocast_dtype):
            with torch.no_grad():
                cond = conditioning(self.host, batch.prompts, batch.sizes)
            prediction = self.host.predict(x_noisy, t, cond)
        return diffusion_loss(prediction, target, batch.weights, sample_weights)

    def run(self, step: int, batches: Sequence, clip: Optional[float]) -> StepOutcome:
        """One optimizer step over ``batches`` (grad_accum micro-batches of step ``step``)."""
        with _step_rng(self.device, mix_seed(self.seed, "dropout", step)):
            total = 0.0
            for micro, batch in enumerate(batches):
                loss = self.loss(batch, step * self.grad_accum + micro) / len(batches)
                value = float(loss.detach())
                total += value
                if not math.isfinite(value):
                    self.optimizer.zero_grad(set_to_none=True)
                    return StepOutcome(value * len(batches), None, NON_FINITE_LOSS, self._scale())
                self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = self._grad_norm()
        skipped = None
        if not math.isfinite(grad_norm):
            # with a scaler, a finite loss whose gradient overflowed is the scale being too high for fp16
            skipped = OVERFLOW if self.scaler.is_enabled() else NON_FINITE_GRADIENT
            if self.scaler.is_enabled():
                self.scaler.step(self.optimizer)   # sees the inf it recorded and skips; update() lowers the scale
                self.scaler.update()
        else:
            self._clip(clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return StepOutcome(total, grad_norm, skipped, self._scale() if skipped else None)

    def _scale(self) -> Optional[float]:
        return float(self.scaler.get_scale()) if self.scaler.is_enabled() else None

    def _grad_norm(self) -> float:
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return 0.0
        norms = torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads])
        return float(torch.linalg.vector_norm(norms))

    def _clip(self, clip: Optional[float]) -> None:
        if clip is None or self.clip_mode == "none":
            return
        if self.clip_mode == "value":
            torch.nn.utils.clip_grad_value_(self.params, clip)
        elif self.clip_mode == "norm":
            torch.nn.utils.clip_grad_norm_(self.params, clip)


def cuda_devices(device) -> List[int]:
    """The CUDA device indices torch.random.fork_rng must save and restore for work on ``device``."""
    device = torch.device(device)
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


@contextlib.contextmanager
def _step_rng(device: torch.device, seed: int):
    """The global RNG (dropout draws from it) seeded from ``seed`` inside, and restored afterwards."""
    devices = cuda_devices(device)
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        if devices:
            with torch.cuda.device(devices[0]):
                torch.cuda.manual_seed(seed)
        yield
