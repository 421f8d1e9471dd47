"""Bounding what an unpickled torch file holds, and putting real tensors (or shape stubs) in: the tree may nest
at most MAX_DEPTH deep, may not contain itself, and may not take more than MAX_NODES steps to walk when shared
values are counted as often as they are used (which is what repr, json or a deep copy would do).
"""
from __future__ import annotations

from typing import Callable, Dict

from ..errors import FormatError
from .safe_pickle import Inert, TensorRef

MAX_DEPTH = 64          # containers inside containers; weights files nest 5 deep, SD checkpoints about 8
MAX_NODES = 2_000_000   # values counted as often as they are referenced

_LEAVES = (str, bytes, bytearray, int, float, complex, bool, type(None), TensorRef, Inert, type)


def finish(tree, path, convert: Callable[[TensorRef], object]):
    """``tree`` with every TensorRef replaced by ``convert(ref)`` (shared refs stay shared); FormatError when it
    nests deeper than MAX_DEPTH, refers to itself, or would take more than MAX_NODES steps to walk."""
    done: Dict[int, tuple] = {}     # id -> (result, nodes, the object itself: kept alive, so ids stay unique)
    path_ids = set()
    stack = [(tree, False)]
    while stack:
        obj, expanded = stack.pop()
        oid = id(obj)
        if isinstance(obj, _LEAVES) or (oid in done and not expanded):
            continue
        if not isinstance(obj, (dict, list, tuple, set, frozenset)):
            raise FormatError(path, f"its pickle holds a {type(obj).__name__}, which a file of weights never has")
        if not expanded:
            if oid in path_ids:
                raise FormatError(path, "its pickle holds a value that contains itself; a file of weights never "
                                        "does. The file is damaged or crafted")
            if len(path_ids) >= MAX_DEPTH:
                raise FormatError(path, f"its pickle nests values more than {MAX_DEPTH} deep; a file of weights "
                                        "never does. The file is damaged or crafted")
            path_ids.add(oid)
            stack.append((obj, True))
            stack.extend((child, False) for child in _children(obj))
            continue
        path_ids.discard(oid)
        nodes = 1 + sum(done[id(c)][1] if id(c) in done else 1 for c in _children(obj))
        if nodes > MAX_NODES:
            raise FormatError(path, f"its pickle holds more than {MAX_NODES:,} values (counting shared ones as "
                                    "often as they are used); a file of weights never does")
        done[oid] = (_rebuilt(obj, done, convert), nodes, obj)
    return _value(tree, done, convert)


def _children(obj):
    if isinstance(obj, dict):
        return [v for item in obj.items() for v in item]
    return list(obj)


def _value(obj, done, convert):
    if isinstance(obj, TensorRef):
        return convert(obj)
    return done[id(obj)][0] if id(obj) in done else obj


def _rebuilt(obj, done, convert):
    if isinstance(obj, dict):   # in place: keeps OrderedDict and its attributes (a state dict's _metadata)
        for key in list(obj):
            obj[key] = _value(obj[key], done, convert)
        return obj
    if isinstance(obj, list):
        obj[:] = [_value(v, done, convert) for v in obj]
        return obj
    return type(obj)(_value(v, done, convert) for v in obj)   # tuple, set, frozenset (keys hold no tensors)
