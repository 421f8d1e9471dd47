"""Stand-in of sgm/modules/diffusionmodules/util.py: the same helpers as ldm's file of that name, which sgm's
copy follows (timestep embedding, beta schedule, the CheckpointFunction-based checkpoint, layer builders)."""
from ldm.modules.diffusionmodules.util import (  # noqa: F401  (re-exported as sgm names them)
    avg_pool_nd,
    checkpoint,
    conv_nd,
    linear,
    make_beta_schedule,
    normalization,
    timestep_embedding,
    zero_module,
)
