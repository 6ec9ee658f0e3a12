"""Regenerate the *unlabelled* model completions of the judge evaluation set (see README.md).

    python -m tools.judge_eval.build_candidates [--calibration] [--out FILE]

Completions come from the untuned embedded model (``safetyheads.load_model()``, SmolLM2-135M-
Instruct, fp32, CPU), 128 new tokens, stop at EOS, in left-padded batches of up to 16. Prompts are drawn
with ``random.Random(0)`` from the bundled harmful sets and from Stanford Alpaca (benign). Labels are
NOT produced here: they were assigned by hand in ``assemble.py``. Batched sampling on another
machine or torch build can give other sampled texts; the labelled file is the record.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from safetyheads import ablate, load_model
from safetyheads.data import load_prompts
from safetyheads.prompts import adds_special_tokens, format_prompt

HERE = Path(__file__).resolve().parents[2] / "safetyheads" / "data" / "judge_eval"  # the labelled set
ALPACA = HERE.parent / "train" / "alpaca.json"  # the bundled copy (StrongREJECT's strongreject.json beside it)
TOPIC = re.compile(r"\b(illegal|crime|criminal|law|laws|legal|ethic\w*|harm\w*|responsib\w*|danger\w*|fraud|"
                   r"theft|police|safety|drug\w*|weapon\w*|hack\w*)\b", re.I)
# Ablations that break the model (used only to obtain real "model breakage" text): UA on every head
# of the given layers, eps 1e-5.
ABLATIONS = {
    "ua-L0": [f"L0H{h}" for h in range(9)],
    "ua-L1-3": [f"L{l}H{h}" for l in range(1, 4) for h in range(9)],
    "sc-L1-3": [f"L{l}H{h}" for l in range(1, 4) for h in range(9)],
    "ua-L10-12": [f"L{l}H{h}" for l in range(10, 13) for h in range(9)],
}


def pick_prompts() -> list[dict]:
    rng = random.Random(0)
    rows = []
    used = set()
    for name in ("maliciousinstruct", "advbench", "jailbreakbench"):
        prompts = list(load_prompts(name).prompts)
        idx = rng.sample(range(len(prompts)), 14)
        for j, i in enumerate(idx):
            kind = "harmful" if j < 12 else "harmful-ablated"
            rows.append({"prompt": prompts[i], "prompt_source": f"{name}#{i}", "kind": kind})
            used.add(prompts[i])
    alpaca = [r["instruction"] for r in json.loads(ALPACA.read_text())]
    plain = rng.sample(range(len(alpaca)), 14)
    topical = [i for i, q in enumerate(alpaca) if TOPIC.search(q)]
    topical = rng.sample(topical, 14)
    for i in plain + topical:
        rows.append({"prompt": alpaca[i], "prompt_source": f"alpaca#{i}", "kind": "benign"})
    return rows


def pick_calibration_prompts() -> list[dict]:
    """Prompts for the NLL calibration texts: none of them is in the evaluation set."""
    rng = random.Random(1)
    alpaca = [r["instruction"] for r in json.loads(ALPACA.read_text())]
    strongreject = [r["instruction"] for r in json.loads((ALPACA.parent / "strongreject.json").read_text())]
    taken = {r["prompt"] for r in pick_prompts()}
    rows = []
    for name, pool, n_plain, n_ablated, kind in (("alpaca", alpaca, 14, 4, "benign"),
                                                 ("strongreject", strongreject, 14, 4, "harmful")):
        idx = [i for i in rng.sample(range(len(pool)), n_plain + n_ablated + 4) if pool[i] not in taken][: n_plain + n_ablated]
        for j, i in enumerate(idx):
            rows.append({"prompt": pool[i], "prompt_source": f"{name}#{i}",
                         "kind": kind if j < n_plain else f"{kind}-ablated"})
    return rows


def generate(model, tok, rows: list[dict], batch: int = 16) -> None:
    tok.padding_side = "left"
    ablated = [r for r in rows if r["kind"].endswith("-ablated")]
    for k, r in enumerate(ablated):
        r["ablation"] = list(ABLATIONS)[k % len(ABLATIONS)]
    for k, r in enumerate(rows):
        r["template"] = "chat" if k % 2 == 0 else "paper"
        r["decoding"] = "greedy" if k % 4 in (0, 1) else "top-k 5, temperature 1"
        if r.get("ablation"):  # model breakage shows under any decoding; one setting keeps batches few
            r["template"], r["decoding"] = "paper", "top-k 5, temperature 1"
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["template"], r["decoding"], r.get("ablation")), []).append(r)
    for (template, decoding, ablation), members in sorted(groups.items(), key=str):
        for s in range(0, len(members), batch):
            chunk = members[s : s + batch]
            texts = [format_prompt(tok, r["prompt"], template) for r in chunk]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=adds_special_tokens(template))
            kw = dict(max_new_tokens=128, pad_token_id=tok.pad_token_id)
            if decoding == "greedy":
                kw.update(do_sample=False)
            else:
                kw.update(do_sample=True, top_k=5, temperature=1.0, top_p=1.0)
            torch.manual_seed(1234 + s)
            t0 = time.time()
            ctx = ablate(model, ABLATIONS[ablation], method=ablation.split("-")[0], eps=1e-5) if ablation else nullcontext()
            with ctx, torch.no_grad():
                out = model.generate(**enc, **kw)
            for r, ids in zip(chunk, out[:, enc.input_ids.shape[1]:]):
                r["response"] = tok.decode(ids, skip_special_tokens=True)
                r["sampling_seed"] = None if decoding == "greedy" else 1234 + s
            print(f"{template} {decoding} {ablation}: {len(chunk)} in {time.time() - t0:.0f} s", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", help="default: candidates.jsonl, or calibration_candidates.jsonl with --calibration")
    ap.add_argument("--calibration", action="store_true", help="the NLL calibration prompts instead")
    args = ap.parse_args()
    args.out = args.out or str(HERE / ("calibration_candidates.jsonl" if args.calibration else "candidates.jsonl"))
    torch.set_num_threads(1)  # the machine is shared; OpenMP spin-waiting hurts more than it helps
    model, tok = load_model()
    rows = pick_calibration_prompts() if args.calibration else pick_prompts()
    generate(model, tok, rows)
    with open(args.out, "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} rows to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
