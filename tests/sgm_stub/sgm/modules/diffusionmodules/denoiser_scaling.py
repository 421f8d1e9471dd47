"""Stand-in of sgm/modules/diffusionmodules/denoiser_scaling.py: (c_skip, c_out, c_in, c_noise) per sigma."""
import torch


class EpsScaling:
    """(sgm/modules/diffusionmodules/denoiser_scaling.py: EpsScaling) the network predicts the noise."""

    def __call__(self, sigma):
        return torch.ones_like(sigma, device=sigma.device), -sigma, 1 / (sigma ** 2 + 1.0) ** 0.5, sigma.clone()


class VScaling:
    """(sgm/modules/diffusionmodules/denoiser_scaling.py: VScaling) the network predicts the velocity."""

    def __call__(self, sigma):
        return (1.0 / (sigma ** 2 + 1.0), -sigma / (sigma ** 2 + 1.0) ** 0.5, 1.0 / (sigma ** 2 + 1.0) ** 0.5,
                sigma.clone())
