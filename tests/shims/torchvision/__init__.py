"""Test-only stand-in for torchvision on the current-torch lane (LANE=current in dev/test.sh).

PyPI's torchvision does not import beside the CPU torch build this machine has, and ldm / open_clip only
import a few names from it at module level. This provides those names; it is never on the users' path.
"""
__version__ = "0.0.0+hypernet-ext-shim"
from . import ops, transforms, utils  # noqa: E402,F401
