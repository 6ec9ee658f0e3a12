"""docs/walkthrough-8b.md: every command of its bash blocks runs, in the doc's order, on the embedded
model on the CPU. Only the model, the device, the precision and the sizes are changed (the table
SUBSTITUTIONS below); options, files, shell variables and the order are the doc's. A command the doc
changes to one the CLI does not take, or whose output the next command needs, fails here."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from safetyheads.cli import main
from safetyheads.models import DEFAULT_MODEL

from conftest import require_embedded_model

pytestmark = pytest.mark.integration

require_embedded_model()

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "walkthrough-8b.md"
HUB_MODEL = "meta-llama/Llama-3.1-8B-Instruct"

# (pattern, replacement) applied to every line of the doc's bash blocks: the embedded model for the 8B one,
# the CPU in float32 for the GPU in bf16, small sizes; nothing else.
SUBSTITUTIONS = [
    (re.escape(HUB_MODEL), DEFAULT_MODEL),
    (r" --revision [0-9a-f]{40}", ""),
    (r"--device cuda\b", "--device cpu"),
    (r"--dtype bfloat16\b", "--dtype float32"),
    (r"--limit \d+", "--limit 1"),  # one query: a Ships sweep of the 270 heads is ~10 s here
    (r"--max-new-tokens \d+", "--max-new-tokens 8"),
    (r"--steps \d+", "--steps 1"),
]


def doc_lines() -> list[str]:
    """The lines of the doc's bash blocks, in order."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def substituted(line: str) -> str:
    for pattern, replacement in SUBSTITUTIONS:
        line = re.sub(pattern, replacement, line)
    return line


def test_the_doc_names_the_8b_model_and_every_step():
    lines = doc_lines()
    commands = [line.split()[1] for line in lines if line.startswith("safetyheads ")]
    assert commands == ["ships", "asr", "asr", "judge", "sahara", "asr", "export", "generate"]
    assert any(HUB_MODEL in line and "--allow-download" in line and "--dtype bfloat16" in line for line in lines)
    assert sum("--per-query-top-k 1" in line for line in lines) == 1
    # every substitution applies somewhere: a rule that matches nothing would hide a renamed option
    for pattern, _ in SUBSTITUTIONS:
        assert any(re.search(pattern, line) for line in lines), pattern


def test_every_command_of_the_walkthrough_runs_on_the_embedded_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the doc's relative outputs land here
    variables: dict[str, str] = {}
    ran = []
    for line in doc_lines():
        line = substituted(line)
        assignment = re.fullmatch(r"(\w+)=(.*)", line)
        if assignment:
            variables[assignment.group(1)] = " ".join(shlex.split(assignment.group(2)))
            continue
        assert line.startswith("safetyheads "), f"the walkthrough's blocks hold commands only: {line}"
        if "$HEADS" in line:
            assert "HEADS" in variables, "HEADS is used before Sahara printed a group"
        expanded = re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], line)
        argv = shlex.split(expanded)[1:]
        assert main(argv) == 0, expanded
        out = capsys.readouterr().out
        ran.append(argv[0])
        if argv[0] == "sahara":  # the doc: put the group it printed in HEADS
            group = re.search(r"^Sahara group: (.+)$", out, re.M)
            assert group, out
            variables["HEADS"] = group.group(1).replace(" ", "")
    assert ran == ["ships", "asr", "asr", "judge", "sahara", "asr", "export", "generate"]

    # what each step left: per-query heads named in the rows, the three-way labels, the group's ablation
    rows = [json.loads(x) for x in Path("own-top1.jsonl").read_text().splitlines()[1:]]
    assert len(rows) == 1 and all(len(r["ships_heads"]) == 1 and r["ablation"]["heads"] == r["ships_heads"]
                                  for r in rows)
    labels = [json.loads(x)["label"] for x in Path("own-top1.three-way.jsonl").read_text().splitlines()[1:]]
    assert len(labels) == 1 and set(labels) <= {"complied", "refused", "broken"}
    heads = variables["HEADS"].split(",")
    saved = json.loads((Path("llama31-ablated") / "safetyheads_ablation.json").read_text())
    assert saved["ablation"]["heads"] == heads and saved["ablation"]["method"] == "ua"
    exported = [json.loads(x) for x in Path("exported.jsonl").read_text().splitlines()[1:]]
    assert len(exported) == 1 and exported[0]["ablation"] is None


def test_the_readme_links_the_walkthrough_and_shows_the_per_query_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/walkthrough-8b.md" in readme
    assert re.search(r"^safetyheads asr .*--per-query-top-k 1", readme, re.M)
