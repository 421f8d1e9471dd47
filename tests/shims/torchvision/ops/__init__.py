"""torchvision.ops for open_clip's import of ops.misc."""
from . import misc  # noqa: F401
