"""One rule for whole-number and real-number settings in every config (TrainConfig, DataConfig, ScheduleConfig):
3, 3.0, "3" and " 3.0 " are the same whole number everywhere; bools, fractions, text and inf/nan are refused
with the field named. The fields are taken from the dataclasses, so a new numeric field is covered too."""
import dataclasses
import math

import pytest

from hypernet_ext.config import default_of, real_number, whole_number
from hypernet_ext.data import DataConfig
from hypernet_ext.errors import ConfigError
from hypernet_ext.schedules import ScheduleConfig
from hypernet_ext.training import TrainConfig

CONFIGS = (TrainConfig, DataConfig, ScheduleConfig)
BASE = {DataConfig: {"data_dir": "x"}}


def numeric_fields(kind):
    return [(cls, f.name) for cls in CONFIGS for f in dataclasses.fields(cls)
            if type(default_of(cls, f.name)) is kind]


def build(cls, name, value):
    return cls(**dict(BASE.get(cls, {}), **{name: value}))


@pytest.mark.parametrize("cls, name", numeric_fields(int), ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_whole_numbers_read_alike_in_every_config(cls, name):
    default = default_of(cls, name)
    for same in (default, float(default), str(default), f" {float(default)} "):
        assert getattr(build(cls, name, same), name) == default and type(getattr(build(cls, name, same), name)) is int
    for bad in (True, default + 0.5, "abc", float("inf"), None):
        if bad is None and name == "bucket_pixels":
            continue
        with pytest.raises(ConfigError) as info:
            build(cls, name, bad)
        assert str(info.value).startswith(f"{name}: ")


@pytest.mark.parametrize("cls, name", numeric_fields(float), ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_real_numbers_read_alike_in_every_config(cls, name):
    default = default_of(cls, name)
    assert getattr(build(cls, name, str(default)), name) == default
    for bad in (True, "abc", float("nan"), float("inf")):
        with pytest.raises(ConfigError) as info:
            build(cls, name, bad)
        assert str(info.value).startswith(f"{name}: ")


def test_the_messages_say_what_is_allowed():
    with pytest.raises(ConfigError, match=r"^steps: 0 must be at least 1$"):
        whole_number("steps", 0, 1)
    with pytest.raises(ConfigError, match=r"^steps: 2.5 must be a whole number$"):
        whole_number("steps", 2.5, 1)
    with pytest.raises(ConfigError, match=r"^flip: 1.5 must be a number between 0 and 1$"):
        real_number("flip", 1.5, 0.0, 1.0)
    with pytest.raises(ConfigError, match=r"^noise_offset: -1 must be a number >= 0 \(0: off\)$"):
        real_number("noise_offset", -1, 0.0, note=" (0: off)")
    assert whole_number("seed", 2 ** 70) == 2 ** 70 and math.isclose(real_number("x", "1e-3"), 1e-3)
