"""Stand-in for webui v1.10.1 modules/sd_hijack_checkpoint.py: webui's training checkpoint hijack, which
replaces the forward of ldm's BasicTransformerBlock, ResBlock and AttentionBlock for every instance."""
import ldm.modules.attention
import ldm.modules.diffusionmodules.openaimodel
from torch.utils.checkpoint import checkpoint


def BasicTransformerBlock_forward(self, x, context=None):
    """(modules/sd_hijack_checkpoint.py)"""
    return checkpoint(self._forward, x, context)


def AttentionBlock_forward(self, x):
    """(modules/sd_hijack_checkpoint.py)"""
    return checkpoint(self._forward, x)


def ResBlock_forward(self, x, emb):
    """(modules/sd_hijack_checkpoint.py)"""
    return checkpoint(self._forward, x, emb)


stored = []


def add():
    """(modules/sd_hijack_checkpoint.py: add)"""
    if len(stored) != 0:
        return
    stored.extend([ldm.modules.attention.BasicTransformerBlock.forward,
                   ldm.modules.diffusionmodules.openaimodel.ResBlock.forward,
                   ldm.modules.diffusionmodules.openaimodel.AttentionBlock.forward])
    ldm.modules.attention.BasicTransformerBlock.forward = BasicTransformerBlock_forward
    ldm.modules.diffusionmodules.openaimodel.ResBlock.forward = ResBlock_forward
    ldm.modules.diffusionmodules.openaimodel.AttentionBlock.forward = AttentionBlock_forward


def remove():
    """(modules/sd_hijack_checkpoint.py: remove)"""
    if len(stored) == 0:
        return
    ldm.modules.attention.BasicTransformerBlock.forward = stored[0]
    ldm.modules.diffusionmodules.openaimodel.ResBlock.forward = stored[1]
    ldm.modules.diffusionmodules.openaimodel.AttentionBlock.forward = stored[2]
    stored.clear()
