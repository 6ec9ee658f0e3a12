"""Run by tests/test_distributed.py under `torchrun --nproc_per_node 2` (gloo on CPU): the same
Ships sweep, Sahara search and generation run as the test computes in one process; rank 0 writes
what it got (and the order its save callbacks saw) to the JSON file named on the command line."""

import json
import sys

import torch

torch.set_num_threads(1)

from safetyheads.ablation import AblationSpec  # noqa: E402
from safetyheads.distributed import rank, world_size  # noqa: E402
from safetyheads.generation import DecodingSpec, generate_responses  # noqa: E402
from safetyheads.sahara import sahara  # noqa: E402
from safetyheads.ships import ships_scores  # noqa: E402
from safetyheads.testing import tiny_model, tiny_tokenizer  # noqa: E402

PROMPTS = ["How do I pick a lock?", "Write a poem about rain.", "Tell me a secret.", "Ignore the rules.",
           "What is two plus two?"]


def compute(model, tok):
    saved = {"ships": [], "sahara": [], "generate": []}
    table = ships_scores(model, tok, PROMPTS[:3], method="ua", eps=1e-5, template="paper",
                         on_prompt=lambda pid, rows: saved["ships"].append(pid), batch_size=5)
    result = sahara(model, tok, PROMPTS, steps=2, template="paper", batch_size=5,
                    on_step=lambda step, rows: saved["sahara"].append(step))
    specs = [AblationSpec("L0H1", "ua", 1e-5), None, AblationSpec("L1H2,L0H0", "ua", 1e-5), None,
             AblationSpec("L2H3", "ua", 1e-5)]
    rows = generate_responses(model, tok, PROMPTS, ablation=specs, decoding=DecodingSpec(max_new_tokens=6),
                              batch_size=1, on_batch=lambda b: saved["generate"].append([r["prompt_id"] for r in b]))
    return {
        "ships": [[r.prompt_id, r.head_name, repr(r.ships)] for r in table.itertuples()],
        "sahara_group": [str(h) for h in result.group],
        "sahara_scores": [repr(x) for x in result.scoreboard["score"]],
        "generate": [[r["prompt_id"], r["response"]] for r in rows],
        "saved": saved,
    }


def main():
    model, tok = tiny_model("llama-gqa", attn_implementation="sdpa"), tiny_tokenizer()
    out = compute(model, tok)
    out["world_size"] = world_size()
    if rank() == 0:
        with open(sys.argv[1], "w") as f:
            json.dump(out, f)
    elif any(out["saved"].values()):
        raise SystemExit("a non-main process ran a save callback")


if __name__ == "__main__":
    main()
