"""Stand-in for webui v1.10.1 modules/sd_hijack_optimizations.py: the "sdp" cross-attention optimization,
which replaces ldm's and sgm's CrossAttention.forward for every instance (class level), as webui does."""
import ldm.modules.attention
import sgm.modules.attention
import torch
from ldm.util import default

from modules import shared
from modules.hypernetworks import hypernetwork

ldm_forward = ldm.modules.attention.CrossAttention.forward   # ldm's own, put back by undo()
sgm_forward = sgm.modules.attention.CrossAttention.forward   # sgm's own (the stand-in's class is ldm's)


def scaled_dot_product_attention_forward(self, x, context=None, mask=None, **kwargs):
    """(modules/sd_hijack_optimizations.py: scaled_dot_product_attention_forward), without the mask."""
    batch_size, sequence_length, inner_dim = x.shape
    h = self.heads
    q_in = self.to_q(x)
    context = default(context, x)
    context_k, context_v = hypernetwork.apply_hypernetworks(shared.loaded_hypernetworks, context)
    k_in = self.to_k(context_k)
    v_in = self.to_v(context_v)
    head_dim = inner_dim // h
    q, k, v = (t.view(batch_size, -1, h, head_dim).transpose(1, 2) for t in (q_in, k_in, v_in))
    hidden_states = torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
    hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, h * head_dim)
    hidden_states = self.to_out[0](hidden_states)
    return self.to_out[1](hidden_states)


class SdOptimization:
    """(modules/sd_hijack_optimizations.py: SdOptimization)"""
    name: str = None
    label: str = None
    cmd_opt: str = None
    priority: int = 0

    def title(self):
        return self.name if self.label is None else f"{self.name} - {self.label}"

    def is_available(self):
        return True

    def apply(self):
        pass

    def undo(self):
        """webui puts back its own einsum forward; the stand-in puts back ldm's."""
        ldm.modules.attention.CrossAttention.forward = ldm_forward
        sgm.modules.attention.CrossAttention.forward = sgm_forward


class SdOptimizationSdp(SdOptimization):
    """(modules/sd_hijack_optimizations.py: SdOptimizationSdp)"""
    name = "sdp"
    label = "scaled dot product"
    cmd_opt = "opt_sdp_attention"
    priority = 70

    def apply(self):
        ldm.modules.attention.CrossAttention.forward = scaled_dot_product_attention_forward
        sgm.modules.attention.CrossAttention.forward = scaled_dot_product_attention_forward


def list_optimizers(res):
    """(modules/sd_hijack_optimizations.py: list_optimizers)"""
    res.extend([SdOptimizationSdp()])
