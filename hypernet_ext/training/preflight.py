"""What can be checked about a run before it starts, shown back to the user: the schedule in words, the data set
counted (from file headers, nothing encoded), the network's attention widths against the model's, the file the
run starts from and the optimizer. ``check_run`` collects every problem instead of stopping at the first, so a
form can show them all; each problem names the option it is about.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from ..data import count_images
from ..errors import HypernetError, error_field
from ..families import family_of, label
from ..schedules import LRSchedule


@dataclass
class RunCheck:
    """The checks of one run (see the module docstring); ``problems`` stop it, ``notes`` do not."""
    schedule: str = ""
    data: str = ""
    validation_data: str = ""
    widths: str = ""
    start: str = ""
    problems: List[Tuple[Optional[str], str]] = field(default_factory=list)   # (option, message)
    notes: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, option: Optional[str], error) -> None:
        """Record ``error``, about the option it names itself, else ``option``."""
        self.problems.append((error_field(error) or option, str(error)))

    def view(self) -> dict:
        return {"ok": self.ok, "schedule": self.schedule, "data": self.data, "validation_data": self.validation_data,
                "widths": self.widths, "start": self.start, "notes": list(self.notes),
                "problems": [{"field": f, "error": e} for f, e in self.problems]}


def model_widths(unet) -> List[int]:
    """Every input width of the model's to_k / to_v layers (what a new network should cover)."""
    from ..attach import attention_modules

    widths = set()
    for _, module, width in attention_modules(unet):
        widths.add(width)
        v_width = getattr(module.to_v, "in_features", None)
        if isinstance(v_width, int):
            widths.add(v_width)
    return sorted(widths)


def widths_text(network_widths: Sequence[int], model_widths: Sequence[int]) -> Tuple[str, Optional[str]]:
    """(what the network's widths mean on this model, a problem when none of them fits)."""
    net, model = sorted(set(network_widths)), sorted(set(model_widths))
    fits, outside = [w for w in net if w in model], [w for w in net if w not in model]
    listed = f"the network covers {_join(net)}; the model's attention widths are {_join(model)}"
    if not fits:
        made_for = family_of(net)
        hint = f" (it was made for {label(made_for)})" if made_for else ""
        return listed, (f"{listed}: none fits{hint}. Choose a network made for the loaded model, or create one in the "
                        "Create tab (its widths default to the model's)")
    if outside:
        return f"{listed}: it trains at {_join(fits)} only; {_join(outside)} stay as they are", None
    missing = [w for w in model if w not in net]
    rest = f" ({_join(missing)} of the model are not covered)" if missing else ""
    return f"{listed}: all fit{rest}", None


def _join(widths) -> str:
    return ", ".join(str(w) for w in widths) or "none"


def check_run(plan, network_widths: Sequence[int], model_widths: Sequence[int], start_step: int = 0,
              start_text: str = "") -> RunCheck:
    """Check ``plan`` (a training.request.TrainPlan) for a network with ``network_widths`` that starts at
    ``start_step`` (``start_text`` says from which file) on a model with ``model_widths``."""
    from ..optim import load_optimizer_class

    check = RunCheck(start=start_text)
    try:
        schedule = LRSchedule.from_config(plan.train.schedule, plan.train.steps)
        check.schedule = schedule.describe()
        schedule.rates.check_resume(start_step)
        if start_step:
            check.notes.append(f"the network has trained {start_step} steps: the run goes on from step "
                               f"{start_step} to step {schedule.end_step}")
    except HypernetError as err:
        check.problem("learn_rate", err)
    try:
        check.data = str(count_images(plan.data))
    except HypernetError as err:
        check.problem("data_dir", err)
    if plan.train.validation.data_dir:
        try:
            check.validation_data = str(count_images(plan.data.replace(data_dir=plan.train.validation.data_dir)))
        except HypernetError as err:
            check.problem("val_data_dir", err)
    check.widths, problem = widths_text(network_widths, model_widths)
    if problem:
        check.problems.append(("network", problem))
    try:
        load_optimizer_class(plan.train.optimizer.name)
    except HypernetError as err:
        check.problem("optimizer", err)
    return check


def check_planned(library, entry, plan, model_widths: Sequence[int]) -> RunCheck:
    """``check_run`` for ``entry``'s network in ``library`` (hypernet_ext.library), from the file the run starts
    with: the newest complete checkpoint when ``plan.resume`` (the network's own file when there is none)."""
    newest = library.newest_checkpoint(entry) if plan.resume else None
    source = newest or entry.path
    try:
        info = library.describe(source)
    except HypernetError as err:
        check = RunCheck()
        check.problem("network", err)
        return check
    step = int(info.step)
    if newest is not None:
        start = f"resumes from {source} (step {step}) with its optimizer state"
    elif plan.resume:
        start = f"starts from {source} (step {step}): no checkpoint with its optimizer state to resume from yet"
    else:
        start = f"starts from {source} (step {step})"
    return check_run(plan, info.widths, model_widths, step, start)


def check_request(make_plan, library, model_widths) -> RunCheck:
    """The checks of a request: ``make_plan()`` -> (entry, TrainPlan) validates it (its HypernetError is the
    check's problem), then ``check_planned`` with ``model_widths()``."""
    try:
        entry, plan = make_plan()
    except HypernetError as err:
        check = RunCheck()
        check.problem(None, err)
        return check
    return check_planned(library, entry, plan, model_widths())
