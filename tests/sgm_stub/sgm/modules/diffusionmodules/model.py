"""Stand-in of sgm/modules/diffusionmodules/model.py: the VAE's Encoder and Decoder (and AttnBlock, which webui's
attention optimizations patch), the same classes as ldm's model.py."""
from ldm.modules.diffusionmodules.model import AttnBlock, Decoder, Encoder, nonlinearity  # noqa: F401
