"""Stand-in of sgm/modules/diffusionmodules/wrappers.py: the UNet wrapper DiffusionEngine calls."""
import torch
import torch.nn as nn

OPENAIUNETWRAPPER = "sgm.modules.diffusionmodules.wrappers.OpenAIWrapper"


class IdentityWrapper(nn.Module):
    """(sgm/modules/diffusionmodules/wrappers.py: IdentityWrapper) holds the UNet as ``diffusion_model``."""

    def __init__(self, diffusion_model, compile_model: bool = False):
        super().__init__()
        self.diffusion_model = torch.compile(diffusion_model) if compile_model else diffusion_model

    def forward(self, *args, **kwargs):
        return self.diffusion_model(*args, **kwargs)


class OpenAIWrapper(IdentityWrapper):
    """(sgm/modules/diffusionmodules/wrappers.py: OpenAIWrapper) conditioning dict -> the UNet's arguments."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: dict, **kwargs) -> torch.Tensor:
        x = torch.cat((x, c.get("concat", torch.Tensor([]).type_as(x))), dim=1)
        return self.diffusion_model(x, timesteps=t, context=c.get("crossattn", None), y=c.get("vector", None),
                                    **kwargs)
