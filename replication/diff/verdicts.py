"""The diff of a run's metrics against the expected values: a verdict per metric (PASS within the
tolerance, DRIFT within twice it, FAIL beyond, NEW with no expected value, INFO for numbers reported but
not checked) and the Markdown table of them. Pure: nothing here reads or writes a file."""

from __future__ import annotations

import math

from tabulate import tabulate

VERDICTS = ("PASS", "DRIFT", "FAIL", "NEW", "INFO", "N/A")


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
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    body = tabulate([[r["metric"], r["expected"], r["got"], r["tolerance"], r["verdict"]] for r in rows],
                    headers=["metric", "expected", "got", "tolerance", "verdict"], tablefmt="github", disable_numparse=True)
    summary = ", ".join(f"{v} {n}" for v, n in counts.items() if n)
    return body + f"\n\n{summary}\n"
