"""One spec + runner per paper table or figure (and the sensitivity artefact, beyond the paper), by name."""

from safetyheads.errors import SafetyheadsError

from .chat_template import CHAT_TEMPLATE
from .figure2 import FIGURE2
from .figure4 import FIGURE4
from .figure5 import FIGURE5
from .figure6 import FIGURE6
from .figure7 import FIGURE7
from .figure13 import FIGURE13
from .sensitivity import SENSITIVITY
from .table1 import TABLE1
from .table2 import TABLE2
from .table3 import TABLE3, TABLE5
from .table7 import TABLE7

ARTEFACTS = {a.name: a for a in (TABLE1, TABLE2, TABLE3, TABLE5, TABLE7, FIGURE2, FIGURE4, FIGURE5, FIGURE6,
                                 FIGURE7, FIGURE13, CHAT_TEMPLATE, SENSITIVITY)}


def get_artefact(name: str):
    if name not in ARTEFACTS:
        raise SafetyheadsError(f"unknown artefact {name!r}: choose one of {', '.join(ARTEFACTS)}")
    return ARTEFACTS[name]


def check_artefacts(profile, names: list[str]) -> None:
    """Every name is an artefact, and one that ``profile`` runs (the extension runs four of them)."""
    for n in names:
        get_artefact(n)
    if profile.artefacts is not None:
        bad = [n for n in names if n not in profile.artefacts]
        if bad:
            raise SafetyheadsError(f"the {profile.name} profile has no {', '.join(bad)}: it runs "
                                   f"{', '.join(profile.artefacts)} (or all of them: all)")
