"""Stand-in of sgm/modules/autoencoding/regularizers/__init__.py: the KL regularizer of the SDXL VAE."""
import torch.nn as nn

from ...distributions.distributions import DiagonalGaussianDistribution


class DiagonalGaussianRegularizer(nn.Module):
    """(sgm/modules/autoencoding/regularizers/__init__.py: DiagonalGaussianRegularizer) moments -> a sample (or
    the mode) and the KL loss."""

    def __init__(self, sample: bool = True):
        super().__init__()
        self.sample = sample

    def get_trainable_parameters(self):
        yield from ()

    def forward(self, z):
        posterior = DiagonalGaussianDistribution(z)
        z = posterior.sample() if self.sample else posterior.mode()
        kl_loss = posterior.kl()
        return z, {"kl_loss": kl_loss.sum() / kl_loss.shape[0]}
