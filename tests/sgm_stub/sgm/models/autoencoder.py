"""Stand-in of sgm/models/autoencoder.py: SDXL's VAE as its yaml builds it (AutoencoderKLInferenceWrapper).

The state-dict layout is sgm's (and ldm's): encoder, decoder, quant_conv, post_quant_conv.
"""
import pytorch_lightning as pl
import torch

from ..modules.diffusionmodules.model import Decoder, Encoder
from ..modules.distributions.distributions import DiagonalGaussianDistribution
from ..util import instantiate_from_config


class AbstractAutoencoder(pl.LightningModule):
    """(sgm/models/autoencoder.py: AbstractAutoencoder) the parts the inference classes use."""

    def __init__(self, ema_decay=None, monitor=None, input_key: str = "jpg", ckpt_path=None, ignore_keys=()):
        super().__init__()
        self.input_key = input_key
        self.use_ema = ema_decay is not None
        if monitor is not None:
            self.monitor = monitor


class AutoencodingEngine(AbstractAutoencoder):
    """(sgm/models/autoencoder.py: AutoencodingEngine) encoder, decoder, regularization and loss from configs."""

    def __init__(self, *args, encoder_config, decoder_config, loss_config, regularizer_config,
                 optimizer_config=None, lr_g_factor=1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.encoder = instantiate_from_config(encoder_config)
        self.decoder = instantiate_from_config(decoder_config)
        self.loss = instantiate_from_config(loss_config)
        self.regularization = instantiate_from_config(regularizer_config)

    def encode(self, x, return_reg_log: bool = False):
        z = self.encoder(x)
        z, reg_log = self.regularization(z)
        return (z, reg_log) if return_reg_log else z

    def decode(self, z):
        return self.decoder(z)


class AutoencoderKL(AutoencodingEngine):
    """(sgm/models/autoencoder.py: AutoencoderKL) ldm's KL autoencoder layout; encode gives the posterior."""

    def __init__(self, embed_dim: int, **kwargs):
        ddconfig = kwargs.pop("ddconfig")
        kwargs.pop("ckpt_path", None)
        kwargs.pop("ignore_keys", ())
        identity = {"target": "torch.nn.Identity"}
        super().__init__(encoder_config=identity, decoder_config=identity, regularizer_config=identity,
                         loss_config=kwargs.pop("lossconfig"), **kwargs)
        if not ddconfig["double_z"]:
            raise ValueError("AutoencoderKL needs double_z")
        self.encoder = Encoder(**ddconfig)
        self.decoder = Decoder(**ddconfig)
        self.quant_conv = torch.nn.Conv2d(2 * ddconfig["z_channels"], 2 * embed_dim, 1)
        self.post_quant_conv = torch.nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)
        self.embed_dim = embed_dim

    def encode(self, x):
        if self.training:
            raise AssertionError(f"{self.__class__.__name__} only supports inference currently")
        return DiagonalGaussianDistribution(self.quant_conv(self.encoder(x)))

    def decode(self, z, **decoder_kwargs):
        return self.decoder(self.post_quant_conv(z), **decoder_kwargs)


class AutoencoderKLInferenceWrapper(AutoencoderKL):
    """(sgm/models/autoencoder.py: AutoencoderKLInferenceWrapper) encode gives a sample of the posterior."""

    def encode(self, x):
        return super().encode(x).sample()
