"""Stand-in of sgm/modules/diffusionmodules/denoiser_weighting.py: loss weights per sigma."""
import torch


class UnitWeighting:
    """(sgm/modules/diffusionmodules/denoiser_weighting.py: UnitWeighting)"""

    def __call__(self, sigma):
        return torch.ones_like(sigma, device=sigma.device)


class EpsWeighting:
    """(sgm/modules/diffusionmodules/denoiser_weighting.py: EpsWeighting)"""

    def __call__(self, sigma):
        return sigma ** -2.0
