"""The names of outcome cells (outcomes.json), built in one place: the artefact that writes a cell and the
claim that reads it call the same function here.

A cell name is a dotted string ("figure2 aligned.ua.greedy.paper.advbench.ablated"). When the writer
and the reader each spelled it with their own f-string, renaming a cell on one side made its claim
read "not run", silently. Now both sides build it here, each builder checks its arguments against the
values the artefacts use, and ``claims.Results`` raises ``MissingCell`` when results that exist lack a
cell a claim needs (see ``Results.sets``), naming the cell.

Parsers (``*_ks``, ``figure4b_heads``) are the inverse of the builders, for the cells whose last part
is data (a group size, a head)."""

from __future__ import annotations

from safetyheads.errors import SafetyheadsError

SETS = ("advbench", "jailbreakbench", "maliciousinstruct")  # the paper's sets, in the order claims pool them
LEVELS = ("query", "dataset")  # each query's own Ships heads / one Sahara head set for every query
STATES = ("vanilla", "ablated")
METHODS = ("ua", "sc")
TABLE3_LEVELS = ("sahara", "ships")
FIGURE6A_MODELS = ("aligned", "swapped", "base")  # swapped: the aligned model with the base's attention
FIGURE6B_MEASURES = ("refusal", "degenerate", "nll")
TABLE7_CONDITIONS = ("Sure", "UA+Sure", "SC+Sure", "UA", "SC", "vanilla")  # in the order Table 7 prints them


class MissingCell(SafetyheadsError):
    """Results that exist lack a cell that a claim reads: the artefact and the claim disagree on a name."""


def _check(value: str, allowed: tuple, what: str) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r} in a cell name; one of {', '.join(allowed)}")
    return value


def _dataset(level: str) -> str:
    """The prefix of a dataset-level cell ('' at the query level)."""
    return "dataset." if _check(level, LEVELS, "level") == "dataset" else ""


def figure2(role: str, method: str, decoding: str, template: str, set_name: str, state: str, level: str = "query") -> str:
    """Figure 2: one model, ablation, decoding and input format on one set, vanilla or ablated."""
    return (f"{_dataset(level)}{role}.{_check(method, METHODS, 'method')}.{decoding}.{template}.{set_name}."
            f"{_check(state, STATES, 'state')}")


def table1(state: str, set_name: str) -> str:
    """Table 1: vanilla, or the top-3 Sahara UA heads ablated, on one set."""
    return f"{_check(state, STATES, 'state')}.{set_name}"


def table3_vanilla(set_name: str) -> str:
    """Tables 3 and 5: the vanilla model on one set."""
    return f"vanilla.{set_name}"


def table3(level: str, method: str, set_name: str, k: int) -> str:
    """Tables 3 and 5: k heads ablated, the Sahara group's first k or each query's own top-k Ships heads."""
    return f"{_check(level, TABLE3_LEVELS, 'level')}.{_check(method, METHODS, 'method')}.{set_name}.k{int(k)}"


def table3_ks(names, level: str) -> list[int]:
    """The group sizes of the ``level`` cells among ``names`` (inverse of ``table3``): 1 to the largest k found
    (the artefact writes every k up to its profile's sahara_steps, so a gap is a missing cell, not a smaller run)."""
    prefix = f"{_check(level, TABLE3_LEVELS, 'level')}."
    found = [int(n.rsplit(".k", 1)[1]) for n in names if n.startswith(prefix)]
    return list(range(1, max(found) + 1)) if found else []


def figure4a(set_name: str, k: int) -> str:
    """Figure 4a: the first k heads of the Sahara UA group ablated (k = 0: vanilla)."""
    return f"a.{set_name}.k{int(k)}"


def figure4a_ks(names, set_name: str) -> list[int]:
    """The group sizes of ``set_name``'s Figure 4a cells among ``names``, 0 (vanilla) left out: 1 to the
    largest found (every k up to the profile's sahara_steps is written: a gap is a missing cell)."""
    prefix = f"a.{set_name}.k"
    found = [int(n[len(prefix):]) for n in names if n.startswith(prefix)]
    return list(range(1, max(found) + 1)) if found and max(found) > 0 else []


def figure4b(set_name: str, head: str = "vanilla") -> str:
    """Figure 4b: one head UA-ablated ("L5H6"), or the vanilla model, on the map's queries."""
    return f"b.{set_name}.{head}"


def figure4b_heads(names, set_name: str) -> list[str]:
    """The heads of ``set_name``'s per-head map among ``names`` (inverse of ``figure4b``), in their order."""
    prefix = f"b.{set_name}."
    return [n[len(prefix):] for n in names if n.startswith(prefix) and n != figure4b(set_name)]


def figure6a(set_name: str, model: str) -> str:
    """Figure 6a: the aligned model, it with the base model's attention, or the base, on one set."""
    return f"a.{set_name}.{_check(model, FIGURE6A_MODELS, 'model')}"


def figure6b(condition: str, measure: str) -> str:
    """Figure 6b: one condition's answers to the benign prompts, one measure of them."""
    return f"b.{condition}.{_check(measure, FIGURE6B_MEASURES, 'measure')}"


def table7(set_name: str, condition: str, level: str = "query") -> str:
    """Table 7: one condition on one set; the plain conditions (vanilla, Sure) exist at the query level only."""
    return f"{_dataset(level)}{set_name}.{_check(condition, TABLE7_CONDITIONS, 'condition')}"


def chat_template(set_name: str, condition: str, level: str = "query") -> str:
    """The chat template: vanilla, or the top-k UA heads ablated (``ua_top1``, ``ua_top3``), on one set."""
    if condition != "vanilla" and not (condition.startswith("ua_top") and condition[6:].isdigit()):
        raise ValueError(f"unknown chat-template condition {condition!r}; vanilla or ua_top<k>")
    return f"{_dataset(level)}{set_name}.{condition}"


def figure13(role: str) -> str:
    """Figure 13: every candidate head's generalized-Ships score for one model."""
    return f"scores.{role}"


def sensitivity_heldout(set_name: str, n: int | None = None, r: int | None = None, tag: str = "vanilla") -> str:
    """Sensitivity: held-out ASR, vanilla or with the (N, r) cell's top-1 head (tag k1) or group (k<size>)."""
    return f"heldout.{set_name}.vanilla" if n is None else f"heldout.{set_name}.n{int(n)}.r{int(r)}.{tag}"


def sensitivity_query_level(set_name: str, eps: float | None = None, k: int | None = None) -> str:
    """Sensitivity: each query's own top-k heads ranked with one eps (None: vanilla)."""
    return f"query_level.{set_name}.vanilla" if eps is None else f"query_level.{set_name}.eps{eps:.0e}.k{int(k)}"
