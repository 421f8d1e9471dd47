"""Module imported by open_clip; its functions are not used by hypernet_ext's tests."""


def resize(*args, **kwargs):
    raise NotImplementedError("resize is not part of the test-only torchvision shim")


def pad(*args, **kwargs):
    raise NotImplementedError("pad is not part of the test-only torchvision shim")
