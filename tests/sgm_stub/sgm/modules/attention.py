"""Stand-in of sgm/modules/attention.py: ldm's SpatialTransformer, BasicTransformerBlock and CrossAttention.

sgm's classes have the same layout (to_q/to_k/to_v without bias, to_out; ``checkpoint`` on the transformer block,
``use_checkpoint`` on the spatial transformer; ``use_linear`` projections; one context tensor for every block),
which is what webui's attention optimizations and hypernet_ext rely on.
"""
from ldm.modules.attention import BasicTransformerBlock, CrossAttention, SpatialTransformer  # noqa: F401
