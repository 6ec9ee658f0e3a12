"""Draw more development rows for the three-way judge's reader: the committed harness completions that
the judge's rules (steps 1-6) leave open, i.e. exactly the rows the reader decides, that no labelled file
holds yet.

Drawn after the first judge version was scored on the test part, to give the reader more examples of its
own kind of row (the first draw held 292 open development rows, 85 of them complied). Every row drawn here
is **development** data: the test part of ``items.jsonl`` and ``base_extra.jsonl`` is unchanged and still
scored once per judge version. Takes every open row of a harmful query (both organisms, the base model,
every artefact of mini and ci) and ``BENIGN_QUOTA`` open rows of Figure 6b's benign prompts, shuffles
them with ``SEED``, gives them ids ``x0000``..., and writes ``items_extra.jsonl`` (the same fields as
``items.jsonl``) and, given a folder, the blind labellers' batch files (id, prompt, response only).
Which rows are open depends on the rules of the judge version it ran with (recorded in each row's
``drawn_with``); the committed file is the record.

    python -m tools.organism_labels.draw_extra [BATCH_FOLDER]
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from safetyheads.judges.three_way import ThreeWayJudge

from .draw import load_pool, write_batches

HERE = Path(__file__).resolve().parents[2] / "safetyheads" / "data" / "organism_labels"  # the labelled set

SEED = 20261208
BENIGN_QUOTA = 120
N_BATCHES = 8
FIELDS = ["id", "split", "prompt", "response", "profile", "artefact", "cell", "prompt_id", "old_refused",
          "old_rule", "stopped_early", "group", "drawn_with"]


def labelled_pairs() -> set:
    pairs = set()
    for name in ("items.jsonl", "base_extra.jsonl"):
        for line in (HERE / name).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            pairs.add((row["prompt"], row["response"]))
    return pairs


def main(batch_folder: str | None = None) -> None:
    have = labelled_pairs()
    rest = [r for r in load_pool() if (r["prompt"], r["response"]) not in have]
    judge = ThreeWayJudge.rules_only()
    decided = judge.before_reading([r["response"] for r in rest], [r["prompt"] for r in rest])
    open_rows = [r for r, v in zip(rest, decided) if v is None]
    rng = random.Random(SEED)
    harmful = [r for r in open_rows if r["group"] != "BENIGN"]
    benign = [r for r in open_rows if r["group"] == "BENIGN"]
    drawn = harmful + rng.sample(benign, min(BENIGN_QUOTA, len(benign)))
    rng.shuffle(drawn)
    for i, row in enumerate(drawn):
        row.update(id=f"x{i:04d}", split="dev", drawn_with="three-way rules of commit d766a6d")
    with open(HERE / "items_extra.jsonl", "w", encoding="utf-8") as f:
        for row in drawn:
            f.write(json.dumps({k: row[k] for k in FIELDS}, ensure_ascii=False) + "\n")
    if batch_folder:
        write_batches(drawn, Path(batch_folder), -(-len(drawn) // N_BATCHES))
    print(f"{len(drawn)} rows ({len(harmful)} harmful, {len(drawn) - len(harmful)} benign) of {len(open_rows)} open")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
