"""Stand-in of sgm/modules/attention.py: ldm's BasicTransformerBlock and CrossAttention, and ldm's
SpatialTransformer with sgm's handling of one context for blocks of any depth.

sgm's classes have the same layout (to_q/to_k/to_v without bias, to_out; ``checkpoint`` on the transformer block,
``use_checkpoint`` on the spatial transformer; ``use_linear`` projections), which is what webui's attention
optimizations and hypernet_ext rely on.
"""
from ldm.modules.attention import BasicTransformerBlock, CrossAttention  # noqa: F401
from ldm.modules.attention import SpatialTransformer as LdmSpatialTransformer


class SpatialTransformer(LdmSpatialTransformer):
    """(sgm/modules/attention.py: SpatialTransformer.forward) one context tensor serves every block (ldm's wants a
    list with one context per block when the depth is above 1)."""

    def forward(self, x, context=None):
        if not isinstance(context, list):
            context = [context]
        if len(context) == 1:
            context = context * len(self.transformer_blocks)
        return super().forward(x, context=context)
