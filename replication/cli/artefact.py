"""One artefact's run: spec -> compute -> diff against its expected values -> results written, its diff
printed; and the summary of several."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tabulate import tabulate

from safetyheads.distributed import is_main, state, world_size

from ..artefacts import check_artefacts, get_artefact
from ..compute.context import Context
from ..diff.expected import NO_EXPECTED_NOTE, expected_path, load_expected
from ..diff.verdicts import diff, exit_code, render_diff
from ..results.paths import shown
from ..results.write import write_outputs

SUMMARY_VERDICTS = ("PASS", "DRIFT", "FAIL", "NEW")


def print_summary(ctx: Context, summary: list) -> None:
    """Each artefact's time and verdicts (when there were several), and what generation decoded."""
    if len(summary) > 1:
        print("\nsummary:")
        for n, seconds, c in summary:
            print(f"  {n:14s} {seconds:7.0f} s  " + ", ".join(f"{k} {v}" for k, v in c.items() if v))
        print(f"  {'total':14s} {sum(s for _, s, _ in summary):7.0f} s (shared results are computed by the "
              "first artefact that needs them)")
    g = ctx.generation
    if g.rows:
        print(f"generation: {g.rows} completions, {g.tokens:,} tokens decoded of a {g.budget:,}-token budget "
              f"({g.tokens / g.budget:.0%}); {g.stopped} stopped early once the verdict was settled")


def run_artefact(ctx: Context, name: str, out_root: Path | None = None,
                 quiet: bool = False) -> tuple[int, list[dict], float]:
    """Run one artefact, diff it against its expected values, write its outputs and print its diff;
    -> (exit code, diff rows, seconds)."""
    spec = get_artefact(name)
    check_artefacts(ctx.profile, [name])
    ctx.begin_artefact()  # its provenance lists what it used
    t0 = time.perf_counter()
    output = spec.run(ctx)
    seconds = time.perf_counter() - t0
    if not is_main():  # under `accelerate launch` the main process diffs, writes and prints
        return 0, [], seconds
    # a profile without expected values (the extension) is never diffed against a file: every metric is NEW
    expected = load_expected(ctx.profile.name, name) if ctx.profile.expected_values else {}
    rows = diff([m.to_dict() for m in output.metrics], expected)
    text = render_diff(rows)
    diff_md = (f"# {spec.title}: {ctx.profile.folder} vs expected\n\n"
               + ("" if ctx.profile.expected_values else NO_EXPECTED_NOTE + "\n\n") + text)
    folder = write_outputs(ctx, spec, output, seconds, diff_md, out_root)
    if quiet:  # still show what did not pass
        bad = [r for r in rows if r["verdict"] in ("DRIFT", "FAIL")]
        if bad:
            print(f"{spec.name} ({ctx.profile.name}):\n" + render_diff(bad))
        return exit_code(rows), rows, seconds
    for title, frame in output.tables[:1]:
        print(f"\n{spec.title} ({ctx.profile.name}): {title}")
        print(tabulate(frame, headers="keys", tablefmt="github", showindex=False))
    for n in output.notes:
        print(f"note: {n}")
    print(f"\ndiff against {shown(expected_path(ctx.profile.name, name))}:" if ctx.profile.expected_values
          else f"\n{NO_EXPECTED_NOTE}:")
    print(text)
    print(f"outputs: {shown(folder)} ({seconds:.0f} s)")
    return exit_code(rows), rows, seconds


def start_processes() -> None:
    """Under ``accelerate launch``: join the processes now (every process, before any work) and say so."""
    if world_size() > 1:
        state()
        if is_main():
            print(f"replication: {world_size()} processes (accelerate launch): the work of each step is split across "
                  "them; the main process writes the store and the outputs", file=sys.stderr)
