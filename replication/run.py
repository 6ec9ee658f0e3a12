"""spec -> runner -> results (JSONL with provenance) -> table / figure -> diff against expected."""

from __future__ import annotations

import gzip
import importlib
import json
import math
import os
import random
import time
import zlib
from pathlib import Path


from safetyheads.errors import SafetyheadsError
from safetyheads.files import replacing, write_durably
from safetyheads.judges import JUDGES
from safetyheads.judges.stats import wilson_ci

from .artefacts import ARTEFACTS
from .common import KINDS
from .steps import Context

ROOT = Path(__file__).resolve().parent.parent
TABLES = ROOT / "paper_tables"
EXPECTED = TABLES / "expected"
# $SAFETYHEADS_GENERATED moves the generated tables and figures out of the source tree: the container
# sets it to its bind-mounted output folder, since the image's source tree is read-only to its user.
GENERATED = Path(os.environ["SAFETYHEADS_GENERATED"]).resolve() if os.environ.get("SAFETYHEADS_GENERATED") else TABLES / "generated"
VERDICTS = ("PASS", "DRIFT", "FAIL", "NEW", "INFO", "N/A")
NO_EXPECTED_NOTE = ("no expected values exist for this profile (the paper has no numbers for these models): every "
                    "metric is NEW, and CLAIMS.md's extension section reads them")


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


# ------------------------------------------------------------------------------------------------
# The diff: pure


def verdict(metric: dict, expected: dict | None) -> tuple[str, str]:
    """-> (verdict, tolerance shown). ``expected``: {"value", "kind", "tolerance"} or a bound
    {"kind": "bound", "op": ">=" | "<=", "value"}."""
    if expected is None:
        return ("INFO", "") if metric["kind"] == "info" else ("NEW", "")
    got = metric["value"]
    kind = expected.get("kind", metric["kind"])
    if kind == "info":
        return "INFO", ""
    if got is None or (isinstance(got, float) and math.isnan(got)):
        return "FAIL", "no value"
    if kind == "heads":
        return ("PASS" if list(got) == list(expected["value"]) else "FAIL"), "exact"
    if isinstance(got, (str, list, dict, bool)):  # e.g. "undefined: ..." where a number was stored
        return "FAIL", "not a number"
    if kind == "bound":
        ok = got >= expected["value"] if expected["op"] == ">=" else got <= expected["value"]
        return ("PASS" if ok else "FAIL"), f"{expected['op']} {expected['value']}"
    if expected.get("value") is None:  # a baseline stored from a run that had no value for it
        return "FAIL", "expected no value"
    tol = float(expected.get("tolerance") or 0.0)
    d = abs(float(got) - float(expected["value"]))
    eps = 1e-9
    if d <= tol + eps:
        return "PASS", f"+-{tol:g}"
    if d <= 2 * tol + eps:
        return "DRIFT", f"+-{tol:g}"
    return "FAIL", f"+-{tol:g}"


def diff(metrics: list[dict], expected: dict) -> list[dict]:
    exp = expected.get("metrics", {}) if expected else {}
    rows = []
    seen = set()
    for m in metrics:
        e = exp.get(m["name"])
        v, tol = verdict(m, e)
        rows.append({"metric": m["name"], "expected": _show(e), "got": _show_value(m["value"]), "tolerance": tol,
                     "verdict": v, "source": (e or {}).get("source", "")})
        seen.add(m["name"])
    for name, e in exp.items():  # an expected metric the run did not produce
        if name not in seen:
            rows.append({"metric": name, "expected": _show(e), "got": "missing", "tolerance": "", "verdict": "FAIL",
                         "source": e.get("source", "")})
    return rows


def _show_value(v) -> str:
    if isinstance(v, list):
        return ",".join(map(str, v))
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _show(e) -> str:
    if e is None:
        return ""
    if e.get("kind") == "bound":
        return f"{e['op']} {e['value']}"
    return _show_value(e.get("value"))


def exit_code(rows: list[dict]) -> int:
    return 1 if any(r["verdict"] == "FAIL" for r in rows) else 0


def render_diff(rows: list[dict]) -> str:
    from tabulate import tabulate

    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    body = tabulate([[r["metric"], r["expected"], r["got"], r["tolerance"], r["verdict"]] for r in rows],
                    headers=["metric", "expected", "got", "tolerance", "verdict"], tablefmt="github", disable_numparse=True)
    summary = ", ".join(f"{v} {n}" for v, n in counts.items() if n)
    return body + f"\n\n{summary}\n"


# ------------------------------------------------------------------------------------------------
# Expected values


def expected_path(profile: str, artefact: str) -> Path:
    return EXPECTED / profile / f"{artefact}.json"


def load_expected(profile: str, artefact: str) -> dict:
    """The stored expected values of one artefact ({} when none are stored), checked: a file that
    does not parse, or a value of the wrong type, is refused here rather than after a run."""
    path = expected_path(profile, artefact)
    if not path.exists():
        return {}
    where = shown(path)
    if not path.is_file():
        raise SafetyheadsError(f"{where} is not a file: remove it, or restore it with `git checkout {where}`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SafetyheadsError(f"cannot read {where}: {e.strerror or e}") from None
    except ValueError as e:
        raise SafetyheadsError(f"{where} is not valid JSON ({e}): restore it with `git checkout {where}`, or rewrite "
                               "it with `python -m replication update-baselines --write`") from None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise SafetyheadsError(f"{where} is not a valid expected-values file: it needs a 'metrics' object of "
                               "{name: {value, kind, tolerance}}")
    for name, e in data["metrics"].items():
        problem = expected_problem(e)
        if problem:
            raise SafetyheadsError(f"{where}: metric {name!r} {problem}")
    return data


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def expected_problem(e) -> str | None:
    """What is wrong with one stored expected value, in words that say what to fix; None if nothing."""
    if not isinstance(e, dict):
        return "must be an object {value, kind, tolerance}"
    kind, value = e.get("kind"), e.get("value")
    if kind not in KINDS:
        return f"has kind {kind!r}: use one of {', '.join(KINDS)}"
    if kind == "number":
        if value is not None and not _is_number(value):
            return f"has value {value!r} ({type(value).__name__}): a number kind needs a number (or null)"
        tol = e.get("tolerance")
        if tol is not None and (not _is_number(tol) or not tol >= 0):
            return f"has tolerance {tol!r}: use a number >= 0, or null for exact"
    elif kind == "heads":
        if not isinstance(value, list) or not all(isinstance(h, str) for h in value):
            return f"has value {value!r}: a heads kind needs a list of head names such as [\"L7H2\", \"L18H8\"]"
    elif kind == "bound":
        if e.get("op") not in (">=", "<="):
            return f"has op {e.get('op')!r}: a bound needs op \">=\" or \"<=\""
        if not _is_number(value):
            return f"has value {value!r} ({type(value).__name__}): a bound needs a number"
    return None


def shown(path: Path) -> str:
    """A path as a user would type it: relative to the checkout when inside it."""
    path = Path(path)
    return str(path.relative_to(ROOT)) if path.is_absolute() and path.is_relative_to(ROOT) else str(path)


# ------------------------------------------------------------------------------------------------
# Checks before a run: whatever can refuse it is looked at before anything is loaded or computed


def check_folder(path: Path, what: str, write: bool = True) -> None:
    """``path`` is a folder, or can be made one, and (``write``) this user may write there. Creates nothing."""
    # "..": after a part that does not exist yet, the OS cannot resolve it, mkdir would make that part
    path = Path(os.path.abspath(path))
    if path.exists():
        if not path.is_dir():
            raise SafetyheadsError(f"{what} {path} is a file, not a folder: point it at a folder (or a path that "
                                   "does not exist yet)")
        if write and not os.access(path, os.W_OK | os.X_OK):
            raise SafetyheadsError(f"{what} {path} is not writable by this user: point it at a folder you can write")
        return
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise SafetyheadsError(f"{what} {path} cannot be created: {parent} is a file")
    if write and not os.access(parent, os.W_OK | os.X_OK):
        raise SafetyheadsError(f"{what} {path} cannot be created: {parent} is not writable by this user")


def check_optional(names: list[str]) -> None:
    """The optional modules the artefacts import (matplotlib for the figures), imported now rather
    than after an hour of computing."""
    needs: dict[str, list[str]] = {}
    for n in names:
        for module in get_artefact(n).needs:
            needs.setdefault(module, []).append(n)
    for module, users in needs.items():
        try:
            if module == "matplotlib":  # as the figures use it: no display, the Agg backend
                importlib.import_module("matplotlib").use("Agg")
                importlib.import_module("matplotlib.pyplot")
            else:
                importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - a broken install fails in many ways; each means the same here
            raise SafetyheadsError(f"{', '.join(users)} need(s) {module}, which does not import here ({type(e).__name__}: "
                                   f"{e}): install the harness's extra, `pip install '.[replication]'`, or run "
                                   "through nox") from None


def check_device(device: str) -> None:
    # safetyheads.models imports transformers: deferred so that `list` and a dry run stay light
    from safetyheads.models import _resolve_device

    _resolve_device(device)  # raises ModelLoadError (a SafetyheadsError) naming what to use instead


def preflight(profile: str, names: list[str], store_root: Path, *, dry_run: bool = False, device: str = "auto",
              out_root: Path | None = None) -> None:
    """Refuse a run now for anything that would stop it later: unknown artefacts, expected-value
    files that do not parse or hold values of the wrong type, a store or output folder that is a
    file or not writable, a missing optional dependency, an unknown device. Writes nothing."""
    for n in names:
        get_artefact(n)
    for n in names:
        load_expected(profile, n)
    check_folder(store_root, "the store (--store or $SAFETYHEADS_STORE)", write=not dry_run)
    if dry_run:  # a plan reads the store and writes nothing
        return
    check_optional(names)
    check_device(device)
    out_root = Path(out_root or GENERATED)
    check_folder(out_root, "the output folder (paper_tables/generated or $SAFETYHEADS_GENERATED)")
    for n in names:
        folder = out_root / profile / n
        check_folder(folder, f"the output folder of {n}")
        for f in OUTPUT_FILES:
            if (folder / f).is_dir():
                raise SafetyheadsError(f"{folder / f} is a folder where {n} writes a file: move it away")
            if (folder / f).exists() and not os.access(folder / f, os.W_OK):
                raise SafetyheadsError(f"{folder / f} is not writable by this user: {n} replaces it")


# ------------------------------------------------------------------------------------------------
# Running


def _header(ctx: Context, spec, output, seconds: float) -> dict:
    from safetyheads.provenance import provenance

    p = ctx.profile
    models = {role: {"name": p.models[role], "stands_for": p.labels[role], "identity": ident}
              for role, ident in ctx.ids.items() if role in ctx.used_roles}
    return {
        "artefact": spec.name, "title": spec.title, "caption": spec.caption, "paper_source": spec.paper_source,
        "profile": p.to_dict(), "models": models,
        "datasets": _datasets(ctx), "judge": ctx.judge.settings(),
        "decoding": {"greedy": {"max_new_tokens": p.max_new_tokens}, "top-k": {"k": p.topk, "temperature": 1.0, "seed": p.seed}},
        "store": {"root": str(ctx.store.root), "entries": _unique(ctx.used_keys)},
        "seconds": round(seconds, 1),
        "provenance": provenance(),
    }


def _unique(items: list[dict]) -> list[dict]:
    seen, out = set(), []
    for it in items:
        if it["key"] not in seen:
            seen.add(it["key"])
            out.append(it)
    return out


def _datasets(ctx: Context) -> dict:
    from safetyheads.data import load_prompts

    names = {*ctx.profile.sets, *ctx.profile.table_sets, ctx.profile.attribution_set, "alpaca"}
    return {n: load_prompts(n).sha256 for n in sorted(names)}


# every file write_outputs and run_artefact write into an artefact's folder (figures aside); each is
# replaced whole or not at all (safetyheads.files.replacing: a temporary file beside it, renamed)
OUTPUT_FILES = ("results.jsonl", "outcomes.json", "responses.jsonl.gz", "metrics.json", "table.md", "table.tex",
                "diff.md")


def write_outputs(ctx: Context, spec, output, seconds: float, out_root: Path | None = None) -> Path:
    from tabulate import tabulate

    folder = Path(out_root or GENERATED) / ctx.profile.folder / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    header = _header(ctx, spec, output, seconds)
    with replacing(folder / "results.jsonl", text=True) as f:
        f.write(json.dumps({"header": header}) + "\n")
        for r in output.rows:
            f.write(json.dumps(r, default=str) + "\n")
    which = {"profile": ctx.profile.name, **({"model": ctx.profile.variant} if ctx.profile.variant else {})}
    if output.outcomes:  # per-query outcomes: what the claims' paired tests read
        write_durably(folder / "outcomes.json", json.dumps({"artefact": spec.name, **which, "cells": output.outcomes},
                                                           separators=(",", ":")) + "\n")
    else:
        (folder / "outcomes.json").unlink(missing_ok=True)
    write_responses(folder / "responses.jsonl.gz", output.responses)
    metrics = [m.to_dict() for m in output.metrics]
    write_durably(folder / "metrics.json", json.dumps({"artefact": spec.name, **which, "metrics": metrics}, indent=1) + "\n")
    model = f", {ctx.profile.labels['aligned']}" if ctx.profile.variant else ""
    md = [f"# {spec.title} ({ctx.profile.name} profile{model})", "", spec.caption, "",
          f"Paper: {spec.paper_source}. Models: " + "; ".join(f"{r}: {ctx.profile.labels[r]}" for r in ctx.profile.labels), ""]
    tex = []
    for title, frame in output.tables:
        md += [f"## {title}", "", tabulate(frame, headers="keys", tablefmt="github", showindex=False), ""]
        tex += [f"% {title}", tabulate(frame, headers="keys", tablefmt="latex_booktabs", showindex=False), ""]
    for stem, fig in output.figures:
        with replacing(folder / f"{stem}.png") as f:
            fig.savefig(f, format="png", dpi=150)
        with replacing(folder / f"{stem}.pdf") as f:
            fig.savefig(f, format="pdf")
        md += [f"![{stem}]({stem}.png)", ""]
        import matplotlib.pyplot as plt

        plt.close(fig)
    cells = judged_cells(output.outcomes, ctx.judge.name)
    if cells is not None:
        md += [f"## ASR and broken rate of every judged cell ({ctx.judge.name} judge)", "",
               "ASR counts complied answers only; broken: neither an answer nor a refusal (loops, echoes of the query, "
               "word salad, off-topic text), its own finding, never counted as the paper's effect. 95% Wilson intervals.",
               "", tabulate(cells, headers="keys", tablefmt="github", showindex=False, disable_numparse=True), ""]
    if output.notes:
        md += ["## Notes", ""] + [f"- {n}" for n in output.notes] + [""]
    if ctx.profile.departures:
        md += ["## Where this profile departs from the paper", ""] + [f"- {d}" for d in ctx.profile.departures] + [""]
    md += [f"Generated by `python -m replication run {spec.name} --profile {ctx.profile.name}"
           + (f" --model {ctx.profile.variant}" if ctx.profile.variant else "") + "` "
           f"(safetyheads {header['provenance']['version']}, commit {str(header['provenance'].get('git_commit'))[:10]}); "
           "raw results with provenance: results.jsonl.", ""]
    write_durably(folder / "table.md", "\n".join(md))
    write_durably(folder / "table.tex", "\n".join(tex))
    return folder


RESPONSE_FIELDS = ("prompt_id", "prompt", "response", "refused", "label", "rule", "reason", "side", "n_new_tokens",
                   "stopped_early", "stop_token", "settled_for")


def judged_cells(outcomes: dict, judge: str):
    """The table of every outcome cell a three-way judge read, or judges read beside the profile's: n, ASR
    and broken rate with 95% Wilson intervals, per judge. None if there is no such cell."""
    import pandas as pd  # deferred like every pandas import of the harness: a plan needs none

    def rate(bits: str) -> str:
        k, n = bits.count("1"), len(bits)
        if not n:
            return "n/a"
        lo, hi = wilson_ci(k, n, 0.05)
        return f"{k / n:.2f} [{lo:.2f}, {hi:.2f}]"

    rows = []
    for name, cell in outcomes.items():
        if "broken" not in cell and "side" not in cell:
            continue
        row = {"cell": name, "n": len(cell["flags"]), f"ASR ({judge})": rate(cell["flags"])}
        if "broken" in cell:
            row[f"broken ({judge})"] = rate(cell["broken"])
        for side, got in cell.get("side", {}).items():
            row[f"ASR ({side}, beside)"] = rate(got["flags"])
            if side not in JUDGES or JUDGES[side].three_way:  # a two-way judge (a harm classifier) calls nothing broken
                row[f"broken ({side}, beside)"] = rate(got["broken"])
        rows.append(row)
    return pd.DataFrame(rows) if rows else None


def write_responses(path: Path, responses: dict) -> None:
    """Every completion behind the artefact's cells, with its judge verdict and the rule (keyword,
    pattern, or the filter: short, repetition, nonword, nll) that decided it: one JSON line per
    (cell, query), gzip with a fixed timestamp so that a rerun writes the same bytes."""
    if not responses:
        path.unlink(missing_ok=True)
        return
    with replacing(path) as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        for cell, rows in responses.items():
            for r in rows:
                line = {"cell": cell, **{k: r.get(k) for k in RESPONSE_FIELDS if k in r}}
                gz.write((json.dumps(line, ensure_ascii=False) + "\n").encode())


def read_responses(profile: str, artefact: str, root: Path | None = None) -> list[dict]:
    path = (root or GENERATED) / profile / artefact / "responses.jsonl.gz"
    if not path.exists():
        raise SafetyheadsError(f"no responses for {artefact} at the {profile} profile ({shown(path)}); "
                               f"run `python -m replication run {artefact} --profile {profile}` first")
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
    except (OSError, EOFError, ValueError, zlib.error) as e:
        raise SafetyheadsError(f"{shown(path)} is damaged ({type(e).__name__}: {e}): regenerate it with "
                               f"`python -m replication run {artefact} --profile {profile}`") from None
    if not all(isinstance(r, dict) and {"cell", "prompt_id", "response", "refused"} <= r.keys() for r in rows):
        raise SafetyheadsError(f"{shown(path)} holds rows without cell, prompt_id, response and refused: regenerate it with "
                               f"`python -m replication run {artefact} --profile {profile}`")
    return rows


def print_responses(artefact: str, profile: str, cell: str | None, list_cells: bool, n: int, verdict: str | None,
                    rule: str | None, seed: int) -> int:
    """``python -m replication responses``: a reviewer's look at the completions behind a table cell."""
    get_artefact(artefact)
    rows = read_responses(profile, artefact)
    cells: dict = {}
    for r in rows:
        cells.setdefault(r["cell"], []).append(r)
    if list_cells:
        for name, rs in cells.items():
            complied = sum(not r["refused"] for r in rs)
            broken = sum(r.get("label") == "broken" for r in rs)
            print(f"{name:60s} n={len(rs):4d}  complied {complied:4d} (ASR {complied / len(rs):.2f})"
                  + (f"  broken {broken:4d}" if any("label" in r for r in rs) else ""))
        return 0
    if cell is not None and cell not in cells:
        close = [c for c in cells if cell in c][:5]
        raise SafetyheadsError(f"no cell {cell!r} in {artefact} ({profile})" + (f"; did you mean {', '.join(close)}?" if close
                               else "; list them with --list"))
    pick = cells[cell] if cell else rows
    if verdict == "broken":
        pick = [r for r in pick if r.get("label") == "broken"]
    elif verdict:
        pick = [r for r in pick if r["refused"] == (verdict == "refused") and r.get("label") != "broken"]
    if rule:
        pick = [r for r in pick if (r.get("rule") or "none") == rule]
    sample = pick if n == 0 or n >= len(pick) else random.Random(seed).sample(pick, n)
    print(f"{artefact} ({profile}){' ' + cell if cell else ''}: {len(sample)} of {len(pick)} matching responses\n")
    for r in sample:
        label = r.get("label") or ("refused" if r["refused"] else "complied")
        print(f"--- {r['cell']} | query {r['prompt_id']} | {label.upper()} by "
              f"{r.get('rule') or 'no rule'}{': ' + r['reason'] if r.get('reason') else ''}")
        print(f"Q: {r.get('prompt', '')}")
        print(f"A: {r['response']}\n")
    return 0


def run_artefact(ctx: Context, name: str, out_root: Path | None = None, quiet: bool = False) -> tuple[int, list[dict]]:
    """Run one artefact, write its outputs, print and write its diff; -> (exit code, diff rows)."""
    spec = get_artefact(name)
    check_artefacts(ctx.profile, [name])
    ctx.used_keys, ctx.used_roles = [], set()  # per artefact, for its provenance
    t0 = time.perf_counter()
    output = spec.run(ctx)
    seconds = time.perf_counter() - t0
    ctx.artefact_seconds[name] = seconds
    folder = write_outputs(ctx, spec, output, seconds, out_root)
    # a profile without expected values (the extension) is never diffed against a file: every metric is NEW
    expected = load_expected(ctx.profile.name, name) if ctx.profile.expected_values else {}
    rows = diff([m.to_dict() for m in output.metrics], expected)
    text = render_diff(rows)
    write_durably(folder / "diff.md", f"# {spec.title}: {ctx.profile.folder} vs expected\n\n"
                  + ("" if ctx.profile.expected_values else NO_EXPECTED_NOTE + "\n\n") + text)
    if quiet:  # still show what did not pass
        bad = [r for r in rows if r["verdict"] in ("DRIFT", "FAIL")]
        if bad:
            print(f"{spec.name} ({ctx.profile.name}):\n" + render_diff(bad))
    else:
        for title, frame in output.tables[:1]:
            from tabulate import tabulate

            print(f"\n{spec.title} ({ctx.profile.name}): {title}")
            print(tabulate(frame, headers="keys", tablefmt="github", showindex=False))
        for n in output.notes:
            print(f"note: {n}")
        print(f"\ndiff against {shown(expected_path(ctx.profile.name, name))}:" if ctx.profile.expected_values
              else f"\n{NO_EXPECTED_NOTE}:")
        print(text)
        print(f"outputs: {shown(folder)} ({seconds:.0f} s)")
    return exit_code(rows), rows


def stop_points(profile: str = "mini", root: Path | None = None) -> dict | None:
    """How early-stopped generation ended at ``profile``, from its committed responses: the rows of
    early-stop runs (they carry ``stopped_early``), how many stopped once settled, and their mean stop
    token. None when no such rows are committed."""
    folder = (root or GENERATED) / profile
    rows = 0
    stops: list[int] = []
    for path in sorted(folder.glob("*/responses.jsonl.gz")):
        with gzip.open(path, "rt") as f:
            for line in f:
                r = json.loads(line)
                if "stopped_early" not in r:
                    continue
                rows += 1
                if r["stopped_early"]:
                    stops.append(int(r["stop_token"]))
    if not rows:
        return None
    return {"profile": profile, "rows": rows, "stopped": len(stops),
            "mean_stop_token": sum(stops) / len(stops) if stops else 0.0}


def early_stop_factor(points: dict, max_new_tokens: int) -> float:
    """The share of a ``max_new_tokens`` generation's decoding left with early stop, from ``stop_points``:
    a stopped row costs its stop token, every other row the whole budget (conservative: rows that end at
    EOS, or would settle after the smaller profile's token limit, are counted in full)."""
    p = points["stopped"] / points["rows"]
    return (p * min(points["mean_stop_token"], max_new_tokens) + (1 - p) * max_new_tokens) / max_new_tokens


def plan(ctx: Context, names: list[str]) -> str:
    """--dry-run: run the artefacts' code with placeholder results and report what would be computed."""
    from tabulate import tabulate

    from safetyheads.ablation import AblationSpec
    from safetyheads.generation import DecodingSpec

    p = ctx.profile
    check_artefacts(p, names)
    AblationSpec(("L0H0",), "ua", p.eps)  # settings that must construct
    AblationSpec(("L0H0",), "sc", p.eps)
    DecodingSpec("topk", k=p.topk, max_new_tokens=p.max_new_tokens, seed=p.seed)
    unique: dict = {}
    per_artefact = []
    for n in names:
        before = len(ctx.plan)
        get_artefact(n).run(ctx)
        new = [i for i in ctx.plan[before:] if i.key not in unique]
        for i in new:
            unique.setdefault(i.key, i)
        per_artefact.append((n, len({i.key for i in new}), sum({i.key: i.forward_passes for i in new if not i.cached}.values()),
                             sum({i.key: i.new_tokens for i in new if not i.cached}.values())))
    ctx.plan_per_artefact = per_artefact  # read by the extension's table per model and artefact
    items = list(unique.values())
    total = sum(i.forward_passes for i in items if not i.cached)
    lines = [f"profile {p.name}: {len(names)} artefact(s), {len(items)} distinct computations "
             f"({sum(i.cached for i in items)} already in the store {ctx.store.root})", ""]
    lines.append("models: " + "; ".join(f"{r} = {p.models[r]}" + (f"@{p.revisions[r]}" if r in p.revisions else "")
                                        for r in p.models if p.has(r)))
    lines.append("datasets: " + "; ".join(f"{k} sha256 {v[:12]}..." for k, v in _datasets(ctx).items()))
    lines.append(f"settings: template {p.template!r}, eps {p.eps:g}, Sahara {p.sahara_steps} steps on "
                 f"{p.n_attribution} queries, evaluation {'all' if p.n_eval is None else p.n_eval} queries per set, "
                 f"{p.max_new_tokens} new tokens, top-{p.topk} sampling seed {p.seed}, judge {p.judge}"
                 + (f" (beside it: {', '.join(p.side_judges)})" if p.side_judges else ""))
    lines.append("")
    by_kind: dict = {}
    for i in items:
        k = by_kind.setdefault(i.kind, [0, 0])
        k[0] += 1
        k[1] += i.forward_passes
    lines.append(tabulate([[k, n, f"{fp:,}"] for k, (n, fp) in by_kind.items()],
                          headers=["computation", "count", "forward passes (rows)"], tablefmt="github"))
    lines.append("")
    rate = p.gpu_seconds_per_forward
    lines.append(tabulate([[a, c, f"{fp:,}", f"{tk:,}", f"{fp * rate / 3600:.1f}" if rate else "-"]
                           for a, c, fp, tk in per_artefact],
                          headers=["artefact (in run order)", "new computations", "forward passes (rows)",
                                   "new tokens (at most)", "GPU-hours (rough)"], tablefmt="github"))
    lines.append("(an artefact run after another reuses what that one computed)")
    lines.append("")
    if p.gpu_seconds_per_forward:
        hours = total * p.gpu_seconds_per_forward / 3600
        lines.append(f"estimated cost: {total:,} forward passes x {p.gpu_seconds_per_forward:g} s = {hours:.1f} GPU-hours "
                     f"({p.gpu_rate_note})")
    else:
        lines.append(f"total: {total:,} forward passes still to compute")
    lines += _early_stop_lines(ctx, items, total)
    lines += _classifier_lines(ctx, total)
    return "\n".join(lines)


def classifier_costs(ctx: Context) -> list[dict]:
    """Per model judge of the plan (a harm classifier with its own weights): the completions it still has to
    classify, its forward passes (each response's prompt, then up to ``max_new_tokens - 1`` decode steps),
    GPU memory and GPU-hours, estimated by ``ClassifierJudge.estimate`` (nothing is measured)."""
    unique = {i.key: i for i in ctx.classifier_plan}
    out = []
    for judge in (ctx.judge, *ctx.side_judges):
        if not judge.classifier:
            continue
        todo = [i for i in unique.values() if i.judge == judge.name and not i.cached]
        rows = sum(i.rows for i in todo)
        seconds = sum(judge.estimate(i.rows, response_tokens=i.response_tokens)["seconds"] for i in todo)
        per_1000 = judge.estimate(1000, response_tokens=ctx.profile.max_new_tokens)
        out.append({"judge": judge.name, "model": judge.model, "dtype": per_1000["dtype"], "rows": rows,
                    "cached": sum(i.rows for i in unique.values() if i.judge == judge.name and i.cached),
                    "passes": rows * judge.max_new_tokens, "hours": seconds / 3600, "gpu_gb": per_1000["gpu_gb"],
                    "per_1000_s": per_1000["seconds"], "prompt_tokens": per_1000["prompt_tokens"],
                    "batch": judge.batch_size})
    return out


def _classifier_lines(ctx: Context, total: int) -> list[str]:
    """The model judges' cost, counted apart from the profile's models (their own weights and dtype)."""
    from tabulate import tabulate

    costs = classifier_costs(ctx)
    if not costs:
        return []
    p = ctx.profile
    lines = ["", "model judges (harm classifiers beside the profile's judge; their own weights, not in the figures "
                 "above):",
             tabulate([[c["judge"], f"{c['model']} ({c['dtype']})", f"{c['rows']:,}", f"{c['cached']:,}",
                        f"{c['passes']:,}", f"{c['gpu_gb']:.0f}", f"{c['hours']:.1f}"] for c in costs],
                      headers=["judge", "classifier", "completions to classify", "already in the store",
                               "forward passes (at most)", "GPU memory (GB)", "GPU-hours (estimated)"],
                      tablefmt="github")]
    for c in costs:
        lines.append(f"{c['judge']}: about {c['per_1000_s']:.0f} GPU-seconds per 1,000 completions ({c['dtype']}, "
                     f"about {c['prompt_tokens']} prompt tokens each, batches of {c['batch']}): ESTIMATED, not measured "
                     "(no classifier has run on its real weights here; the arithmetic: docs/judges.md)")
    hours = sum(c["hours"] for c in costs)
    if p.gpu_seconds_per_forward:
        models = total * p.gpu_seconds_per_forward / 3600
        lines.append(f"estimated cost with the model judges: {models:.1f} + {hours:.1f} = {models + hours:.1f} GPU-hours")
    return lines


def _early_stop_lines(ctx: Context, items: list, total: int) -> list[str]:
    """The cost with and without early stop, for a profile that decodes every response to the limit."""
    p = ctx.profile
    judged = sum(i.forward_passes for i in items if not i.cached and i.judge_only)
    if p.stop_when_settled:
        return ["", f"early stop is on: {judged:,} of these forward passes are judge-only generation, which stops "
                    "once the verdict is settled (the figures above count every token)"]
    if not judged:
        return []
    points = stop_points("mini") or stop_points("ci")  # ci's shorter answers stand in until mini's are committed
    if points is None:
        return ["", "early stop: no early-stopped mini or ci completions are committed yet to estimate its saving from"]
    f = early_stop_factor(points, p.max_new_tokens)
    with_stop = total - judged + judged * f
    rate = p.gpu_seconds_per_forward
    cost = (lambda n: f"{n * rate / 3600:.1f} GPU-hours") if rate else (lambda n: f"{n:,.0f} forward passes")
    return ["", f"early stop (stop_when_settled, off in this profile as in the paper): without {cost(total)}, "
                f"with {cost(with_stop)}. Of {points['rows']:,} judge-only {points['profile']} completions "
                f"{points['stopped']:,} stopped once settled, at token {points['mean_stop_token']:.1f} on average; "
                f"counting each such row at that token and every other row at the full {p.max_new_tokens} leaves "
                f"{f:.0%} of the judge-only decoding ({judged:,} forward passes). Complied answers never settle, so "
                "the saving shrinks where ablation makes the model comply more often than the organisms do."]
