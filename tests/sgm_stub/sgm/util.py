"""Stand-in of sgm/util.py: building objects from configs and the small tensor helpers sgm's classes use."""
import importlib
from inspect import isfunction

import torch


def disabled_train(self, mode=True):
    """(sgm/util.py: disabled_train) train/eval mode no longer changes."""
    return self


def exists(x):
    """(sgm/util.py: exists)"""
    return x is not None


def default(val, d):
    """(sgm/util.py: default)"""
    if exists(val):
        return val
    return d() if isfunction(d) else d


def expand_dims_like(x, y):
    """(sgm/util.py: expand_dims_like)"""
    while x.dim() != y.dim():
        x = x.unsqueeze(-1)
    return x


def count_params(model, verbose=False):
    """(sgm/util.py: count_params)"""
    return sum(p.numel() for p in model.parameters())


def instantiate_from_config(config):
    """(sgm/util.py: instantiate_from_config)"""
    if "target" not in config:
        if config in ("__is_first_stage__", "__is_unconditional__"):
            return None
        raise KeyError("Expected key `target` to instantiate.")
    return get_obj_from_str(config["target"])(**config.get("params", dict()))


def get_obj_from_str(string, reload=False, invalidate_cache=True):
    """(sgm/util.py: get_obj_from_str)"""
    module, cls = string.rsplit(".", 1)
    if invalidate_cache:
        importlib.invalidate_caches()
    return getattr(importlib.import_module(module, package=None), cls)


def append_zero(x):
    """(sgm/util.py: append_zero)"""
    return torch.cat([x, x.new_zeros([1])])


def append_dims(x, target_dims):
    """(sgm/util.py: append_dims) trailing dimensions up to ``target_dims``."""
    missing = target_dims - x.ndim
    if missing < 0:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}, which is less")
    return x[(...,) + (None,) * missing]


def autocast(f, enabled=True):
    """(sgm/util.py: autocast) runs ``f`` under CUDA autocast with the current autocast settings."""
    def do_autocast(*args, **kwargs):
        with torch.cuda.amp.autocast(enabled=enabled, dtype=torch.get_autocast_gpu_dtype(),
                                     cache_enabled=torch.is_autocast_cache_enabled()):
            return f(*args, **kwargs)

    return do_autocast
