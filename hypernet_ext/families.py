"""Model families and their attention widths: the widths each family's UNet has (the default widths of a new
network), the family a network was made for, and how a network fits a model: a warning naming the widths that
do not apply when part of it does not fit, an error naming the family it was made for when nothing fits.
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple

# family -> (cross-attention context width, self-attention widths), as the published UNets have them
FAMILIES = {
    "sd1": (768, (320, 640, 1280)),
    "sd2": (1024, (320, 640, 1280)),
    "sdxl": (2048, (640, 1280)),
    "sdxl-refiner": (1280, (768, 1536)),
}
LABELS = {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL", "sdxl-refiner": "SDXL refiner"}


def default_widths(family: str) -> List[int]:
    """Every attention width of ``family``'s UNet ('sd1', 'sd2', 'sdxl'), sorted."""
    key = str(family).lower()
    if key not in FAMILIES:
        raise KeyError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    context, self_widths = FAMILIES[key]
    return sorted({context, *self_widths})


def label(family: Optional[str]) -> str:
    """'SD1', 'SD2', 'SDXL', or the family as given."""
    return LABELS.get(str(family).lower(), str(family).upper()) if family else "unknown"


def family_of(widths: Iterable[int]) -> Optional[str]:
    """The family ``widths`` were made for: of the families whose cross-attention width is among them, the one
    sharing the most widths with them (SD1's self-attention width 1280 is the refiner's context width, and the
    refiner's self-attention width 768 is SD1's); None when nothing or more than one family fits as well."""
    given = {int(w) for w in widths}
    scores = {family: len(given & {context, *others}) for family, (context, others) in FAMILIES.items()
              if context in given}
    best = sorted(scores.items(), key=lambda item: -item[1])
    if not best or (len(best) > 1 and best[0][1] == best[1][1]):
        return None
    return best[0][0]


def _made_for(widths: Sequence[int]) -> str:
    family = family_of(widths)
    return f" (made for {label(family)})" if family else ""


def _listed(widths: Iterable[int]) -> str:
    return ", ".join(str(w) for w in sorted({int(w) for w in widths}))


def check_fit(name: str, network_widths: Iterable[int], model_widths: Iterable[int],
              model_family: Optional[str] = None) -> Tuple[List[int], Optional[str]]:
    """(the widths that apply, a warning or None) for a network on a model.

    Raises ValueError, whose message names the network's widths, the family it was made for and the model's
    widths, when none of the network's widths is in the model; the caller wraps it in its own error type.
    """
    net, model = {int(w) for w in network_widths}, {int(w) for w in model_widths}
    fits = sorted(net & model)
    family = model_family or family_of(model)
    model_text = f"this model{f' ({label(family)})' if family else ''} has attention widths {_listed(model)}"
    if not fits:
        raise ValueError(f"network {name!r} covers widths {_listed(net)}{_made_for(net)} and {model_text}: none of "
                         "the network's widths applies. Create a network for this model's widths, or load a model of "
                         "the family the network was made for")
    missing = sorted(net - model)
    if not missing:
        return fits, None
    return fits, (f"network {name!r} covers widths {_listed(net)}{_made_for(net)}; {model_text}, so it applies at "
                  f"{_listed(fits)} only ({_listed(missing)} not in this model)")
