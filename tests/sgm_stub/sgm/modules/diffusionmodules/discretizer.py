"""Stand-in of sgm/modules/diffusionmodules/discretizer.py: the noise levels of SD's DDPM schedule."""
from abc import abstractmethod

import numpy as np
import torch

from ...util import append_zero
from .util import make_beta_schedule


def generate_roughly_equally_spaced_steps(num_substeps: int, max_step: int) -> np.ndarray:
    """(sgm/modules/diffusionmodules/discretizer.py: generate_roughly_equally_spaced_steps)"""
    return np.linspace(max_step - 1, 0, num_substeps, endpoint=False).astype(int)[::-1]


class Discretization:
    """(sgm/modules/diffusionmodules/discretizer.py: Discretization) sigmas, largest first unless flipped."""

    def __call__(self, n, do_append_zero=True, device="cpu", flip=False):
        sigmas = self.get_sigmas(n, device=device)
        sigmas = append_zero(sigmas) if do_append_zero else sigmas
        return sigmas if not flip else torch.flip(sigmas, (0,))

    @abstractmethod
    def get_sigmas(self, n, device):
        pass


class LegacyDDPMDiscretization(Discretization):
    """(sgm/modules/diffusionmodules/discretizer.py: LegacyDDPMDiscretization) SD's linear-in-sqrt betas."""

    def __init__(self, linear_start=0.00085, linear_end=0.0120, num_timesteps=1000):
        super().__init__()
        self.num_timesteps = num_timesteps
        betas = make_beta_schedule("linear", num_timesteps, linear_start=linear_start, linear_end=linear_end)
        self.alphas_cumprod = np.cumprod(1.0 - betas, axis=0)

    def get_sigmas(self, n, device="cpu"):
        if n < self.num_timesteps:
            alphas_cumprod = self.alphas_cumprod[generate_roughly_equally_spaced_steps(n, self.num_timesteps)]
        elif n == self.num_timesteps:
            alphas_cumprod = self.alphas_cumprod
        else:
            raise ValueError
        sigmas = torch.tensor((1 - alphas_cumprod) / alphas_cumprod, dtype=torch.float32, device=device) ** 0.5
        return torch.flip(sigmas, (0,))
