"""Names open_clip imports at module level; using them in a test is an error (they are not implemented)."""
import enum

from . import functional  # noqa: F401


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


class _Unavailable:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __call__(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} is not part of the test-only torchvision shim")


class Compose(_Unavailable):
    pass


class Normalize(_Unavailable):
    pass


class RandomResizedCrop(_Unavailable):
    pass


class ToTensor(_Unavailable):
    pass


class Resize(_Unavailable):
    pass


class CenterCrop(_Unavailable):
    pass
