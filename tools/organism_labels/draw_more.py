"""More development rows for the three-way judge's reader, of the kinds it misjudged: coherent answers.

Version 3's reader was fitted on organism completions and 40-token base-model answers; on the judge
evaluation set it called 8 of 27 benign answers and 18 of 26 harmful answers "broken" (docs/judges.md).
This script makes new completions of the untuned base model (the embedded SmolLM2-135M-Instruct) on
prompts that no labelled row, no judge-evaluation row and no NLL-calibration row uses, and draws the ones
the judge's rules (steps 1-6) leave open, i.e. the rows the reader decides. Every row is **development**
data: the test part is unchanged and still scored once per judge version.

Two steps:

    python -m tools.organism_labels.draw_more prompts FOLDER   # writes FOLDER/<set>.jsonl prompt files
    # then, for each line printed, run the printed `safetyheads generate` command (CPU, torch 2.13.0)
    python -m tools.organism_labels.draw_more draw BATCH_FOLDER OUT.jsonl [OUT.jsonl ...]

``draw`` writes ``items_more.jsonl`` (id ``m0000``..., split dev, prompt, response, source, kind) and the
blind labellers' batch files (id, prompt, response only). Sampled texts may differ on another machine: the
committed file is the record.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from safetyheads.data import load_prompts
from safetyheads.judges.three_way import ThreeWayJudge

from .draw import write_batches

HERE = Path(__file__).resolve().parents[2] / "safetyheads" / "data" / "organism_labels"  # the labelled set
JUDGE_EVAL = HERE.parent / "judge_eval"
SEED = 20261210
N_BATCHES = 8
HARMFUL_SETS = ("strongreject", "harmbench-test", "harmbench-val", "tdc2023", "advbench")
HARMFUL_N = 300  # prompts drawn over HARMFUL_SETS
BENIGN_N = 160  # Alpaca instructions
# (template, decoding flags, new tokens): harmful at mini's 40 tokens and at 64, the most the
# reader reads; benign at 64. Each harmful prompt gets one setting, in turn.
HARMFUL_SETTINGS = (
    ("paper", "--decoding topk --k 5 --seed 11", 40),
    ("chat", "--decoding greedy", 64),
    ("direct", "--decoding topk --k 5 --seed 11", 40),
)
BENIGN_SETTINGS = (("paper", "--decoding greedy", 64), ("chat", "--decoding topk --k 5 --seed 11", 64))


def used_prompts() -> set[str]:
    """Every prompt of a labelled row, a judge-evaluation row or an NLL-calibration row."""
    used = set()
    # the draws made before this one (not items_more.jsonl itself, so that re-running draws the same prompts)
    earlier = [HERE / name for name in ("items.jsonl", "base_extra.jsonl", "items_extra.jsonl")]
    for path in [*earlier, *JUDGE_EVAL.glob("*.jsonl")]:
        for line in path.read_text(encoding="utf-8").splitlines():
            used.add(json.loads(line)["prompt"].strip())
    return used


def write_prompts(folder: Path) -> None:
    used = used_prompts()
    rng = random.Random(SEED)
    harmful = sorted({p for name in HARMFUL_SETS for p in load_prompts(name).prompts if p.strip() not in used})
    benign = [p for p in load_prompts("alpaca").prompts if p.strip() not in used and len(p) < 200]
    chosen = {"harmful": rng.sample(harmful, HARMFUL_N), "benign": rng.sample(benign, BENIGN_N)}
    folder.mkdir(parents=True, exist_ok=True)
    for kind, settings in (("harmful", HARMFUL_SETTINGS), ("benign", BENIGN_SETTINGS)):
        for i, (template, decoding, tokens) in enumerate(settings):
            path = folder / f"{kind}_{template}.jsonl"
            with open(path, "w", encoding="utf-8") as f:
                for prompt in chosen[kind][i :: len(settings)]:
                    f.write(json.dumps({"prompt": prompt}, ensure_ascii=False) + "\n")
            print(f"safetyheads generate --data {path} --template {template} {decoding} --max-new-tokens {tokens} "
                  f"--batch-size 16 --quiet --out {folder / f'out_{kind}_{template}.jsonl'}")


def draw(batch_folder: Path, outputs: list[str]) -> None:
    rows = []
    for path in outputs:
        lines = [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines()]
        run = lines[0]["header"]["run"]
        kind = "benign" if "benign" in Path(path).name else "harmful"
        source = f"base/{kind}/{run['template']}/{run['decoding']['mode']}/{run['decoding']['max_new_tokens']}"
        rows += [{"prompt": r["prompt"], "response": r["response"], "source": source, "kind": kind} for r in lines[1:]]
    decided = ThreeWayJudge.rules_only().before_reading([r["response"] for r in rows], [r["prompt"] for r in rows])
    open_rows = [r for r, v in zip(rows, decided) if v is None]
    random.Random(SEED).shuffle(open_rows)
    with open(HERE / "items_more.jsonl", "w", encoding="utf-8") as f:
        for i, row in enumerate(open_rows):
            row.update(id=f"m{i:04d}", split="dev")
            f.write(json.dumps({k: row[k] for k in ("id", "split", "prompt", "response", "source", "kind")},
                               ensure_ascii=False) + "\n")
    write_batches(open_rows, batch_folder, -(-len(open_rows) // N_BATCHES))
    print(f"{len(open_rows)} open rows of {len(rows)} ({sum(r['kind'] == 'benign' for r in open_rows)} benign)")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "prompts":
        write_prompts(Path(sys.argv[2]))
    elif len(sys.argv) >= 4 and sys.argv[1] == "draw":
        draw(Path(sys.argv[2]), sys.argv[3:])
    else:
        sys.exit("usage: draw_more prompts FOLDER | draw BATCH_FOLDER OUT.jsonl [OUT.jsonl ...]")
