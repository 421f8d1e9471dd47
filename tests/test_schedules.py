"""Schedules: webui's schedule strings checked against an independent model of webui v1.10.1's training loop,
one error message per kind of bad string, warmup and cosine-restart properties, and purity (resume at k)."""
import itertools
import logging
import math
import random

import pytest

from hypernet_ext.errors import ConfigError
from hypernet_ext.schedules import (
    CosineRestarts,
    LRSchedule,
    ScheduleConfig,
    parse_pieces,
    parse_schedule,
    warmup_factor,
)


def webui_run(text, max_steps, initial_step=0, accumulation=1):
    """The (step, rate) of every optimizer step webui v1.10.1 takes, modelled from reading
    modules/textual_inversion/learn_schedule.py and train_hypernetwork in modules/hypernetworks/hypernetwork.py:

    * the string is split on ',' and read piece by piece; empty pieces are skipped; a piece `rate:step` with
      step > initial_step is queued as (rate, min(step, max_steps)), and reading stops once a step beyond
      max_steps was queued; `rate:-1` (when not already queued) and a piece without ':' queue (rate,
      max_steps) and stop the reading, so nothing after them is parsed; other pieces (step <= initial_step)
      are dropped;
    * the first queued piece is current from the start (the optimizer is built with its rate); an empty queue
      raises (webui: "Invalid learning rate schedule"; here StopIteration);
    * before each micro-batch the loop asks the scheduler with the number of steps done: when that is >= the
      current piece's end, ONE next piece becomes current, or, with none left, training stops.
    """
    queue = []
    for chunk in text.split(","):
        if not chunk.strip():
            continue
        parts = chunk.split(":")
        rate = float(parts[0])
        if len(parts) != 2:
            queue.append((rate, max_steps))
            break
        end = int(parts[1])
        if end > initial_step:
            queue.append((rate, min(end, max_steps)))
            if end > max_steps:
                break
        elif end == -1:
            queue.append((rate, max_steps))
            break
    if not queue:
        raise StopIteration
    position, taken, done = 0, [], initial_step
    while True:
        for _ in range(accumulation):
            if done >= queue[position][1]:
                position += 1
                if position == len(queue):
                    return taken
        taken.append((done, queue[position][0]))
        done += 1


MAX = 300
STRINGS = [
    "1e-3",
    "  2e-4  ",
    "1e-3:100",
    "1e-3:100, 1e-4:200",
    "1e-3:100,1e-4:-1",
    " 1e-3 : 100 ,  1e-4 : 250 , 1e-5 : -1 ",
    "1e-3:100, 1e-4:1000, 1e-5:2000",
    "1e-3:5000",
    "1e-3:5000, 1e-4:6000",
    "1e-3:100, 1e-4",
    "1e-3:1, 1e-4:2, 1e-5:3",
    "0.005:10, 1e-3:20, 1e-5:299",
    "5e-6:120, 5e-7:-1",
    "1e-3:300",
    "1e-3:1_00, 2e-3:+200",
    # webui skips empty pieces and reads nothing after a piece that runs to the end
    "5e-6:120, 5e-7:-1,",
    ",1e-3:100, 1e-4:-1",
    "1e-3:100,,1e-4:-1",
    "1e-3:-1, 1e-4:200",
    "1e-3, 1e-4:200",
    " , 1e-3:100 , , 1e-4:250, 1e-5, 1e-6:50, ",
]
INITIAL = [0, 1, 2, 3, 10, 99, 100, 101, 150, 250, 299]


@pytest.mark.parametrize("text", STRINGS)
@pytest.mark.parametrize("accumulation", [1, 2])
def test_value_at_matches_webui_for_every_step_and_resume_point(text, accumulation):
    for initial in INITIAL:
        schedule = parse_schedule(text, MAX)
        try:
            taken = webui_run(text, MAX, initial, accumulation)
        except StopIteration:   # webui crashes: every piece ends before the resume step
            assert schedule.steps_left(initial) == 0
            with pytest.raises(ConfigError, match="already trained"):
                schedule.check_resume(initial)
            continue
        assert [step for step, _ in taken] == list(range(initial, schedule.end_step)), (text, initial)
        assert [rate for _, rate in taken] == [schedule.value_at(step) for step, _ in taken], (text, initial)
        assert schedule.steps_left(initial) == len(taken)


@pytest.mark.parametrize("text, max_steps", [("1e-3:300, 1e-4:-1", 300), ("1e-3:300, 1e-4:900", 300),
                                             ("1e-3:50, 2e-3:300, 3e-3:400", 300)])
def test_the_one_deviation_webui_takes_an_extra_step_at_max_steps(text, max_steps):
    """A piece ending exactly at max steps with another after it: webui trains step k = max_steps at the next
    rate (max_steps + 1 steps in all); we stop at max steps. Every earlier step has the same rate."""
    schedule = parse_schedule(text, max_steps)
    taken = webui_run(text, max_steps)
    assert len(taken) == max_steps + 1 and taken[-1][0] == max_steps
    assert schedule.end_step == max_steps and not schedule.ends_early
    assert [rate for _, rate in taken[:-1]] == [schedule.value_at(k) for k in range(max_steps)]


@pytest.mark.parametrize("text, spans, unused", [
    ("1e-3", ((1e-3, MAX),), ()),
    ("1e-3:100, 1e-4:200", ((1e-3, 100), (1e-4, 200)), ()),
    ("1e-3:100, 1e-4:-1", ((1e-3, 100), (1e-4, MAX)), ()),
    ("1e-3:100, 1e-4", ((1e-3, 100), (1e-4, MAX)), ()),
    ("1e-3:100, 1e-4:400, 1e-5:500, 1e-6", ((1e-3, 100), (1e-4, MAX)), ("1e-5:500", "1e-6")),
    ("1e-3:300, 1e-4:-1", ((1e-3, MAX),), ("1e-4:-1",)),
    ("5e-6:120, 5e-7:-1,", ((5e-6, 120), (5e-7, MAX)), ()),
    (",1e-3:100,, 1e-4:-1", ((1e-3, 100), (1e-4, MAX)), ()),
    ("1e-3:-1, 1e-4:200", ((1e-3, MAX),), ("1e-4:200",)),
    ("1e-3, 1e-4:200, 1e-5:100, 1e-6", ((1e-3, MAX),), ("1e-4:200", "1e-5:100", "1e-6")),
])
def test_spans_and_unused_pieces(text, spans, unused):
    schedule = parse_schedule(text, MAX)
    assert schedule.spans == spans and schedule.unused == unused
    assert schedule.end_step == spans[-1][1]
    if unused:
        assert "not used" in schedule.describe() and all(piece in schedule.describe() for piece in unused)


@pytest.mark.parametrize("text, last, ignored", [
    ("1e-3:-1, 1e-4:200", "1e-3:-1", ["1e-4:200"]),
    ("1e-3:100, 1e-4, 1e-5:50,, 2e-5", "1e-4", ["1e-5:50", "2e-5"]),
])
def test_pieces_after_the_end_are_kept_in_unused_with_one_warning(caplog, text, last, ignored):
    with caplog.at_level(logging.INFO, logger="hypernet_ext.schedules"):
        schedule = parse_schedule(text, MAX)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"after '{last}', which runs until the end" in warnings[0]
    assert all(f"'{piece}'" in warnings[0] for piece in ignored)
    assert list(schedule.unused) == ignored
    assert f"not used, after '{last}', which runs until the end: {', '.join(ignored)}" in schedule.describe()


def test_pieces_past_max_steps_are_not_a_warning(caplog):
    with caplog.at_level(logging.INFO, logger="hypernet_ext.schedules"):
        schedule = parse_schedule("1e-3:100, 1e-4:400, 1e-5:500", MAX)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert f"not used, past max steps {MAX}: 1e-5:500" in schedule.describe()


def test_a_rate_applies_before_its_step_not_at_it():
    schedule = parse_schedule("1e-3:100, 1e-4:200", 1000)
    assert schedule.value_at(99) == 1e-3 and schedule.value_at(100) == 1e-4
    assert schedule.value_at(199) == 1e-4
    assert schedule.value_at(200) == 1e-4 and schedule.value_at(5000) == 1e-4   # past the end: the last rate


def test_ends_early_and_its_message():
    early = parse_schedule("1e-3:100, 1e-4:200", 1000)
    assert early.ends_early and early.end_step == 200
    assert "200" in early.end_message and "1000" in early.end_message and ":-1" in early.end_message
    for text in ("1e-3:100, 1e-4:-1", "1e-3", "1e-3:2000"):
        full = parse_schedule(text, 1000)
        assert not full.ends_early and full.end_step == 1000 and full.end_message is None


ERRORS = [
    ("", "the schedule is empty; write"),
    ("   ", "the schedule is empty; write"),
    (",", "the schedule is empty (it holds only commas)"),
    (" , ,, ", "the schedule is empty (it holds only commas)"),
    ("abc", "'abc': the rate must be a number"),
    ("abc:100", "'abc:100': the rate must be a number"),
    (":100", "':100': the rate before ':' is missing"),
    ("1e-3:abc", "'1e-3:abc': the step must be an integer"),
    ("1e-3:1e3", "(write 1000)"),
    ("1e-3:100.5", "'1e-3:100.5': the step must be an integer"),
    ("1e-3:", "'1e-3:': the step after ':' is missing"),
    ("0:100", "'0:100': a rate of 0"),
    ("-1e-3:100", "'-1e-3:100': the rate -0.001 is negative"),
    ("nan:100", "'nan:100': the rate must be a finite number"),
    ("inf", "'inf': the rate must be a finite number"),
    ("1e-3:-5", "'1e-3:-5': the step -5 is negative"),
    ("1e-3:0", "'1e-3:0': a piece that ends at step 0 never applies"),
    ("1e-3:100, 1e-4:50", "'1e-4:50': ends at step 50, before '1e-3:100'"),
    ("1e-3:100, 1e-4:100", "'1e-4:100': ends at step 100, the same step as '1e-3:100'"),
    ("1e-3:100:5", "'1e-3:100:5': a piece holds one ':'"),
    ("1e-3:100\n1e-4:200", "a piece holds one ':'"),
    ("1e-3:-1, abc", "'abc': the rate must be a number"),          # webui never reads it, but surely a typo
    ("1e-3:100,, 1e-4:50", "'1e-4:50': ends at step 50, before '1e-3:100'"),
    (None, "None is not a schedule"),
    (True, "True is not a schedule"),
]


@pytest.mark.parametrize("text, message", ERRORS)
def test_each_bad_string_gets_its_own_message(text, message):
    with pytest.raises(ConfigError) as info:
        parse_schedule(text, 1000)
    assert message in str(info.value)


def test_error_messages_are_distinct():
    """Rows that expect the same text share one message (e.g. '' and '   '); every other pair differs."""
    by_expected = {}
    for text, expected in ERRORS:
        with pytest.raises(ConfigError) as info:
            parse_pieces(text)
        by_expected.setdefault(expected, set()).add(str(info.value))
    assert all(len(messages) == 1 for messages in by_expected.values()), by_expected
    assert len(set.union(*by_expected.values())) == len(by_expected)
    assert len(by_expected) == len(ERRORS) - 4   # 4 pairs of rows share a message on purpose


@pytest.mark.parametrize("text", ["5e-6:120, 5e-7:-1,", ",1e-3:100, 1e-4:-1", "1e-3:100,,1e-4:-1",
                                  "1e-3:-1, 1e-4:200", "1e-3, 1e-4:200"])
def test_strings_webui_accepts_are_accepted(text):
    assert ScheduleConfig(learn_rate=text).learn_rate == text.strip()
    assert [r for _, r in webui_run(text, MAX)] == [parse_schedule(text, MAX).value_at(k) for k in range(MAX)]


def test_whitespace_and_numbers_as_webui_reads_them():
    assert parse_schedule(" 1e-3 : 100 , 2E-4:-1 ", 500).spans == ((1e-3, 100), (2e-4, 500))
    assert parse_schedule(0.001, 10).spans == ((0.001, 10),)
    with pytest.raises(ConfigError, match="max_steps"):
        parse_schedule("1e-3", 0)


def test_value_at_is_a_pure_function_of_the_step():
    schedule = LRSchedule.from_config(ScheduleConfig(learn_rate="1e-3:100, 5e-4:250, 1e-4:-1", kind="cosine",
                                                     cycle_steps=37, cycle_mult=1.5, cycle_warmup=4,
                                                     min_lr=1e-6, gamma=0.8, warmup_steps=20,
                                                     clip_grad_mode="norm", clip_grad_value="1:50, 0.5:-1"), 400)
    forward = [(schedule.lr_at(k), schedule.clip_at(k)) for k in range(400)]
    order = list(range(400))
    random.Random(0).shuffle(order)
    fresh = LRSchedule.from_config(schedule.config, 400)
    assert all((fresh.lr_at(k), fresh.clip_at(k)) == forward[k] for k in order)
    resumed = LRSchedule.from_config(ScheduleConfig.from_dict(schedule.config.to_dict()), 400)
    assert [(resumed.lr_at(k), resumed.clip_at(k)) for k in range(150, 400)] == forward[150:]


@pytest.mark.parametrize("start, steps", [(0.0, 10), (0.1, 10), (0.5, 3), (1.0, 5), (0.0, 1)])
def test_warmup_moves_from_the_first_step_and_reaches_one_at_its_last(start, steps):
    values = [warmup_factor(k, steps, start) for k in range(steps + 5)]
    assert values[0] > 0 and math.isclose(values[0], start + (1 - start) / steps)
    assert values[steps - 1] == 1.0 and values[steps] == 1.0 and values[-1] == 1.0
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert all(math.isclose(values[k + 1] - values[k], (1 - start) / steps) for k in range(steps - 1))
    assert warmup_factor(0, 0, 0.0) == 1.0


def test_warmup_scales_the_schedule():
    schedule = LRSchedule.from_config(ScheduleConfig(learn_rate="1e-3", warmup_steps=10, warmup_start=0.2), 100)
    assert math.isclose(schedule.lr_at(0), 2.8e-4) and math.isclose(schedule.lr_at(5), 6.8e-4)
    assert schedule.lr_at(9) == 1e-3 and schedule.lr_at(10) == 1e-3 and schedule.lr_at(99) == 1e-3
    assert LRSchedule.from_config(ScheduleConfig(learn_rate="1e-3", warmup_steps=5), 100).lr_at(0) > 0


@pytest.mark.parametrize("mult, warm, gamma", itertools.product([1.0, 2.0, 1.5], [0, 3], [1.0, 0.5]))
def test_cosine_restarts(mult, warm, gamma):
    low, peak, first = 1e-5, 1e-3, 10
    cosine = CosineRestarts(first, mult, warm, low, gamma)
    starts, start, length = [], 0, first
    for i in range(5):
        starts.append((start, length))
        start += length
        length = round(first * mult ** (i + 1))
    for i, (start, length) in enumerate(starts):
        top = peak * gamma ** i
        assert cosine.cycle_at(start) == (i, 0, length)
        assert cosine.value_at(start, peak) == (low if warm else pytest.approx(top))          # restart
        assert cosine.value_at(start + warm, peak) == pytest.approx(top)                     # reaches its peak
        inside = [cosine.value_at(start + t, peak) for t in range(warm, length)]
        assert all(b < a for a, b in zip(inside, inside[1:]))                                # anneals
        assert inside[-1] < top * 0.05 + low
        rising = [cosine.value_at(start + t, peak) for t in range(warm + 1)]
        assert all(b > a for a, b in zip(rising, rising[1:]))
    assert all(cosine.value_at(k, peak) >= low for k in range(starts[-1][0]))


def test_cosine_never_goes_below_min_even_when_the_peak_does():
    cosine = CosineRestarts(5, 1.0, 2, 1e-4, 0.1)
    assert all(cosine.value_at(k, 1e-3) >= 1e-4 for k in range(60))
    assert cosine.value_at(40, 1e-3) == 1e-4   # peak 1e-3 * 0.1**8 is far below the floor


def test_cosine_peak_follows_the_schedule_string():
    config = ScheduleConfig(learn_rate="1e-3:20, 1e-4:-1", kind="cosine", cycle_steps=10, min_lr=1e-6)
    schedule = LRSchedule.from_config(config, 60)
    assert schedule.lr_at(0) == pytest.approx(1e-3) and schedule.lr_at(10) == pytest.approx(1e-3)
    assert schedule.lr_at(20) == pytest.approx(1e-4) and schedule.lr_at(30) == pytest.approx(1e-4)
    assert schedule.end_step == 60


def test_clip_schedule_keeps_its_last_value_and_does_not_end_training():
    config = ScheduleConfig(learn_rate="1e-3", clip_grad_mode="value", clip_grad_value="0.5:10, 0.1:20")
    schedule = LRSchedule.from_config(config, 100)
    assert schedule.clip_mode == "value" and schedule.end_step == 100 and not schedule.ends_early
    assert [schedule.clip_at(k) for k in (0, 9, 10, 19, 20, 99)] == [0.5, 0.5, 0.1, 0.1, 0.1, 0.1]
    off = LRSchedule.from_config(ScheduleConfig(clip_grad_mode="disabled", clip_grad_value="junk"), 100)
    assert off.clip_mode == "none" and off.clip_at(5) is None


def test_training_end_follows_the_learning_rate_schedule():
    schedule = LRSchedule.from_config({"learn_rate": "1e-3:40", "unknown_key": 1}, 100)
    assert schedule.end_step == 40 and schedule.ends_early and "40" in schedule.end_message


@pytest.mark.parametrize("fields, message", [
    ({"kind": "linear"}, "kind: 'linear' is unknown"),
    ({"clip_grad_mode": "max"}, "clip_grad_mode: 'max' is unknown"),
    ({"learn_rate": "1e-3:abc"}, "learn_rate: '1e-3:abc': the step must be an integer"),
    ({"clip_grad_mode": "norm", "clip_grad_value": "0"}, "clip_grad_value: '0': a rate of 0"),
    ({"warmup_steps": -1}, "warmup_steps"),
    ({"warmup_steps": 2.5}, "warmup_steps"),
    ({"warmup_start": 1.5}, "warmup_start"),
    ({"cycle_steps": 0}, "cycle_steps"),
    ({"cycle_mult": 0.5}, "cycle_mult"),
    ({"cycle_warmup": 1000}, "cycle_warmup: 1000 must be below cycle_steps"),
    ({"min_lr": -1e-6}, "min_lr"),
    ({"gamma": 1.5}, "gamma"),
    ({"gamma": 0}, "gamma: 0"),
    ({"cycle_steps": "abc"}, "cycle_steps: 'abc'"),
])
def test_config_validation_names_the_field(fields, message):
    with pytest.raises(ConfigError) as info:
        ScheduleConfig(**fields)
    assert message in str(info.value)


def test_config_round_trip_and_text_values():
    config = ScheduleConfig(learn_rate=" 1e-3:100, 1e-4:-1 ", kind="Cosine", warmup_steps="10", cycle_steps="50",
                            clip_grad_mode="Norm", min_lr="1e-7")
    assert (config.kind, config.warmup_steps, config.cycle_steps, config.min_lr) == ("cosine", 10, 50, 1e-7)
    assert config.learn_rate == "1e-3:100, 1e-4:-1" and config.clip_grad_mode == "norm"
    data = config.to_dict()
    assert data["config_version"] == 1 and ScheduleConfig.from_dict(data) == config


def test_cosine_min_lr_must_be_below_the_rates():
    with pytest.raises(ConfigError, match="min_lr"):
        LRSchedule.from_config(ScheduleConfig(learn_rate="1e-5", kind="cosine", min_lr=1e-4), 100)


def test_steps_must_be_whole_and_non_negative():
    schedule = parse_schedule("1e-3", 10)
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(ValueError):
            schedule.value_at(bad)
