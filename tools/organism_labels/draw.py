"""Draw the organism completions to be labelled blind (issue: the three-way judge's ground truth at mini).

Reads the committed harness responses (``paper_tables/generated/{mini,ci}/*/responses.jsonl.gz``), drops
duplicate (prompt, response) pairs, and draws with ``random.Random(SEED)``:

* ``BASE``: completions of the untuned base model on harmful queries (Figure 6a's ``*.base`` cells),
  where genuine compliance is common;
* ``BENIGN``: Figure 6b's benign-instruction cells (vanilla, ablated and base);
* ``COMPLIED`` rows the current judge (keyword-fixed) calls complied, and ``REFUSED_PATTERN`` and
  ``REFUSED_FILTER`` rows it calls refused by a refusal pattern or by the short/repetition/non-word rules,
  from every other cell of the organisms (both organisms, every artefact, vanilla, each ablation, the
  Sure prefill, the chat template, SC and UA).

Within each group, draws go round-robin over artefacts and, inside an artefact, over the kinds of cell
(the cell name without its dataset and head names), so every artefact and cell kind is represented.
Then every drawn row is given an opaque id, the rows are shuffled, and split into a development part
(``DEV_SHARE``) and a held-out test part, stratified by group, before any judge is tuned.

Writes ``items.jsonl`` (id, split, prompt, response: what a labeller sees, plus the source fields the
labeller never sees: profile, artefact, cell, the judge's old verdict) and, given a folder, the files the
blind labellers get there: ``batch_NN.jsonl`` (id, prompt, response only, shuffled). Re-running on the
responses committed with it reproduces ``items.jsonl``.

    python -m tools.organism_labels.draw [BATCH_FOLDER]
"""

from __future__ import annotations

import gzip
import json
import random
import re
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parents[2] / "safetyheads" / "data" / "organism_labels"  # the labelled set
ROOT = HERE.parents[2]
SEED = 20261206
DEV_SHARE = 0.6
QUOTAS = {"BASE": 110, "BENIGN": 40, "COMPLIED": 300, "REFUSED_PATTERN": 130, "REFUSED_FILTER": 150}
BATCH_SIZE = 100
DATASETS = re.compile(r"advbench|jailbreakbench|maliciousinstruct")


def cell_kind(cell: str) -> str:
    """The cell name without its dataset and head names: the unit of stratification."""
    return re.sub(r"L\d+H\d+", "LH", DATASETS.sub("D", cell))


def group(artefact: str, row: dict) -> str:
    if artefact == "figure6" and row["cell"].startswith("b."):
        return "BENIGN"
    if artefact == "figure6" and row["cell"].endswith(".base"):
        return "BASE"
    if not row["refused"]:
        return "COMPLIED"
    return "REFUSED_PATTERN" if row["rule"] in ("pattern", "keyword") else "REFUSED_FILTER"


def load_pool() -> list[dict]:
    pool, seen = [], set()
    for path in sorted(ROOT.glob("paper_tables/generated/*/*/responses.jsonl.gz")):
        profile, artefact = path.parts[-3], path.parts[-2]
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                key = (row["prompt"], row["response"])
                if key in seen:
                    continue
                seen.add(key)
                pool.append({"profile": profile, "artefact": artefact, "cell": row["cell"],
                             "prompt_id": row["prompt_id"], "prompt": row["prompt"], "response": row["response"],
                             "old_refused": row["refused"], "old_rule": row["rule"],
                             "stopped_early": bool(row.get("stopped_early")), "group": group(artefact, row)})
    return pool


def draw(pool: list[dict], rng: random.Random) -> list[dict]:
    by = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))  # group -> artefact -> kind -> rows
    for row in pool:
        by[row["group"]][row["artefact"]][cell_kind(row["cell"])].append(row)
    drawn = []
    for g, quota in QUOTAS.items():
        # one shuffled queue per (artefact, kind); round-robin over artefacts, then over kinds
        queues = {a: [rng.sample(rows, len(rows)) for _, rows in sorted(kinds.items())] for a, kinds in sorted(by[g].items())}
        for a in queues:
            rng.shuffle(queues[a])
        taken = 0
        while taken < quota and any(any(q) for q in queues.values()):
            for a in sorted(queues):
                kinds = [q for q in queues[a] if q]
                if not kinds or taken >= quota:
                    continue
                q = kinds[0]
                drawn.append(q.pop())
                queues[a].append(queues[a].pop(queues[a].index(q)))  # this kind to the back
                taken += 1
    return drawn


def main(batch_folder: str | None = None) -> None:
    rng = random.Random(SEED)
    drawn = draw(load_pool(), rng)
    rng.shuffle(drawn)
    per_group = defaultdict(list)
    for row in drawn:
        per_group[row["group"]].append(row)
    for rows in per_group.values():
        n_dev = round(DEV_SHARE * len(rows))
        for i, row in enumerate(rows):
            row["split"] = "dev" if i < n_dev else "test"
    for i, row in enumerate(drawn):
        row["id"] = f"o{i:04d}"
    fields = ["id", "split", "prompt", "response", "profile", "artefact", "cell", "prompt_id", "old_refused",
              "old_rule", "stopped_early", "group"]
    with open(HERE / "items.jsonl", "w", encoding="utf-8") as f:
        for row in drawn:
            f.write(json.dumps({k: row[k] for k in fields}, ensure_ascii=False) + "\n")
    if batch_folder:
        write_batches(drawn, Path(batch_folder), BATCH_SIZE)
    counts = defaultdict(lambda: defaultdict(int))
    for row in drawn:
        counts[row["group"]][row["split"]] += 1
    print(len(drawn), "rows;", {g: dict(c) for g, c in counts.items()})


def write_batches(drawn: list[dict], folder: Path, size: int) -> None:
    """The blind labellers' files: ``batch_NN.jsonl`` of ``size`` rows each, id, prompt and response only."""
    folder.mkdir(parents=True, exist_ok=True)
    for b in range(0, len(drawn), size):
        with open(folder / f"batch_{b // size:02d}.jsonl", "w", encoding="utf-8") as f:
            for row in drawn[b : b + size]:
                f.write(json.dumps({"id": row["id"], "prompt": row["prompt"], "response": row["response"]},
                                   ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
