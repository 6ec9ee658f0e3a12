"""The registry of judges by name, and the checks that depend on it (settled verdicts, re-judging rows
that were stopped early)."""

from __future__ import annotations

from typing import Iterable

from ..errors import JudgeError
from .classifiers import CLASSIFIERS
from .judge import AuthorsCodeKeywordJudge, FixedKeywordJudge, Judge, PaperKeywordJudge
from .three_way import ThreeWayJudge

JUDGES: dict[str, type[Judge]] = {j.name: j for j in (PaperKeywordJudge, AuthorsCodeKeywordJudge, FixedKeywordJudge,
                                                       ThreeWayJudge, *CLASSIFIERS)}
# The judges that read text by rules (and, for three-way, the embedded model: always here), and the model
# judges, which need a classifier's weights: evaluations and checks that judge offline iterate over the first
RULE_JUDGES = tuple(name for name, j in JUDGES.items() if not j.classifier)
MODEL_JUDGES = tuple(name for name, j in JUDGES.items() if j.classifier)


def settled_for(judges: "Iterable[str | Judge]", prefix: str) -> bool:
    """True if ``prefix``'s verdict is settled (``Judge.settled``) for every judge, given as a Judge
    or a name (default settings: settledness does not depend on them)."""
    judges = [get_judge(j) if isinstance(j, str) else j for j in judges]
    if not judges:
        raise JudgeError("settled_for needs at least one judge: a verdict is settled for someone")
    return all(j.settled(prefix) for j in judges)


def check_rejudge(row: dict, judge: "str | Judge") -> None:
    """Raise JudgeError if ``row`` (a ``generate_responses`` result) was stopped early, once its
    verdict was settled for other judges than ``judge``: its response is cut, and ``judge`` might
    have read the rest differently. Rows that ran to EOS or the token limit pass."""
    if isinstance(judge, Judge):
        name, like, classifier = judge.name, judge.settles_like, judge.classifier
    else:
        known = JUDGES.get(judge)
        name, like, classifier = judge, (known.settles_like if known else ()), bool(known and known.classifier)
    settled = list(row.get("settled_for") or ())
    if row.get("stopped_early") and classifier:
        raise JudgeError(
            f"response {row.get('prompt_id', '?')} stopped early once settled for {', '.join(settled) or 'no judge'}: "
            f"judge {name!r} is a model classifier, which reads whole responses only (regenerate without "
            "stop_when_settled to judge these with it)"
        )
    if row.get("stopped_early") and not ({name, *like} & set(settled)):
        raise JudgeError(
            f"response {row.get('prompt_id', '?')} stopped early once settled for {', '.join(settled) or 'no judge'}: "
            f"judge {name!r} would read a cut response (use one of those judges, or regenerate without stop_when_settled)"
        )


def get_judge(name: str, **kw) -> Judge:
    """A judge by name (``keyword-paper``, ``keyword-authors-code``, ``keyword-fixed``, ``three-way``, and the model
    judges ``llama-guard-3-8b``, ``llama-guard-3-1b``, ``harmbench-cls``); ``kw`` go to its constructor
    (``gibberish=GibberishFilter(...) | None``, ``min_chars=32``; a model judge: ``model``, ``dtype``, ``device``,
    ``allow_download``, ``batch_size``, ...). A model judge loads nothing until it judges."""
    if name not in JUDGES:
        raise JudgeError(f"unknown judge {name!r}: choose one of {', '.join(JUDGES)}")
    try:
        return JUDGES[name](**kw)
    except TypeError as e:
        raise JudgeError(f"bad setting for judge {name!r}: {e}") from None
