"""More completions of the untuned base model (the embedded SmolLM2-135M-Instruct) on harmful queries, where
genuine compliance is common: the organisms' cells alone hold too few real answers for the labelled set to
measure a judge's "complied" class (issue: at least 100 of each label).

Made with the package's own CLI (``safetyheads generate``, CPU, torch 2.13.0, seed 7, 128 new tokens) on
harmful sets the mini profile does not evaluate on, one template and decoding each:

    safetyheads generate --data strongreject   --limit 70 --template paper  --decoding topk --k 5 --seed 7
    safetyheads generate --data harmbench-test --limit 70 --template chat   --decoding greedy --seed 7
    safetyheads generate --data advbench       --limit 70 --template direct --decoding topk --k 5 --seed 7

(each with ``--max-new-tokens 128 --batch-size 16 --threads 1``; sampled texts may differ on another machine:
the committed file is the record). This script cuts each response to its first ``CUT_TOKENS`` tokens, the
mini profile's ``max_new_tokens``, so the labelled texts look like what the judge reads at mini, and writes
``base_extra.jsonl`` (id, split, prompt, response, source). The split is drawn here, with ``SEED``, before
any label is read.

    python -m tools.organism_labels.base_extra OUT1.jsonl OUT2.jsonl OUT3.jsonl
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[2] / "safetyheads" / "data" / "organism_labels"  # the labelled set
CUT_TOKENS = 40
SEED = 20261207
DEV_SHARE = 0.6


def main(paths: list[str]) -> None:
    from safetyheads import load_model  # the tokenizer of the model that wrote the texts

    _, tok = load_model()
    rows = []
    for path in paths:
        lines = [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines()]
        run = lines[0]["header"]["run"]
        source = f"{run['dataset']['dataset']}/{run['template']}/{run['decoding']['mode']}"
        for row in lines[1:]:
            ids = tok(row["response"], add_special_tokens=False).input_ids[:CUT_TOKENS]
            rows.append({"prompt": row["prompt"], "response": tok.decode(ids), "source": source})
    rng = random.Random(SEED)
    rng.shuffle(rows)
    n_dev = round(DEV_SHARE * len(rows))
    with open(HERE / "base_extra.jsonl", "w", encoding="utf-8") as f:
        for i, row in enumerate(rows):
            f.write(json.dumps({"id": f"b{i:04d}", "split": "dev" if i < n_dev else "test", **row},
                               ensure_ascii=False) + "\n")
    print(len(rows), "rows,", n_dev, "dev")


if __name__ == "__main__":
    main(sys.argv[1:])
