"""Stand-in of sgm/modules/distributions/distributions.py: the same DiagonalGaussianDistribution as ldm's."""
from ldm.modules.distributions.distributions import DiagonalGaussianDistribution  # noqa: F401
