"""Build an organism from its recipe: data -> self-distilled answers -> LoRA training -> adapter
folder with a manifest (recipe, seed, data hashes, adapter sha256, training log, timing)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from ..models import cache_dir, sha256_file
from ..provenance import cpu_info, provenance
from .dataset import build_examples, distill_answers, drop_gibberish_answers
from .recipe import OrganismRecipe
from .train import save_adapter, train_adapter

ADAPTER_FILE = "adapter_model.safetensors"


def recipe_key(recipe: OrganismRecipe) -> str:
    return hashlib.sha256(recipe.to_json().encode()).hexdigest()[:16]


def work_dir(recipe: OrganismRecipe) -> Path:
    """Where an interrupted build keeps its distilled answers and checkpoint (keyed by the recipe)."""
    return cache_dir() / "organisms" / f"{recipe.name}-{recipe_key(recipe)}"


def build_organism(recipe: OrganismRecipe, out: "str | Path", progress: bool = True, device: str = "auto",
                   fresh: bool = False) -> dict:
    """Train ``recipe`` and write its adapter folder to ``out``; returns the manifest. Trains in
    float32 on ``device`` (``auto``: a GPU when torch sees one); the committed organisms were built
    on the CPU with the recipe's thread count, and a GPU build differs from them in the last bits.
    An interrupted build resumes from its checkpoint, which a finished build deletes. ``fresh``:
    ignore an unfinished build's checkpoint and the cache of the base's distilled answers too."""
    from ..models import load_model

    out = Path(out)
    torch.set_num_threads(recipe.threads)
    t0 = time.time()
    work = work_dir(recipe)
    if fresh:
        (work / "checkpoint.pt").unlink(missing_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    model, tok = load_model(recipe.base, device=device, dtype="float32")
    base_source = dict(model.safetyheads_source)
    examples, data_report = build_examples(recipe)
    # The base's answers depend only on the base, the prompt, its format and the length: one cache for all recipes.
    distilled = cache_dir() / "organisms" / f"distilled-{base_source.get('sha256', 'unknown')[:16]}-{recipe.answer_tokens}.jsonl"
    answers, generated = distill_answers(model, tok, examples, recipe.answer_tokens, cache=None if fresh else distilled,
                                         progress=progress)
    t_distill = time.time() - t0
    n_answers = len(answers)
    if recipe.drop_gibberish_answers:
        examples, dropped = drop_gibberish_answers(tok, examples, answers)
        data_report["benign_dropped_gibberish"] = dropped
        if progress:
            print(f"safetyheads: dropped {sum(dropped.values())} benign examples whose distilled answer is a loop "
                  f"({', '.join(f'{k} {v}' for k, v in dropped.items()) or 'none'})", file=sys.stderr)
    peft_model, log = train_adapter(model, tok, recipe, examples, answers, work, progress=progress)
    t_train = time.time() - t0 - t_distill
    save_adapter(peft_model, out, recipe)
    answers_digest = hashlib.sha256(json.dumps(sorted(
        [[f, p, ids] for (f, p), ids in answers.items()])).encode()).hexdigest()
    manifest = {
        "organism": recipe.name,
        "recipe": recipe.to_dict(),
        "base": {k: base_source[k] for k in ("model", "kind", "file", "sha256") if k in base_source},
        "data": {**data_report, "distilled_answers_sha256": answers_digest},
        "adapter": {"file": ADAPTER_FILE, "sha256": sha256_file(out / ADAPTER_FILE),
                    "bytes": (out / ADAPTER_FILE).stat().st_size,
                    "trainable_parameters": sum(p.numel() for p in peft_model.parameters() if p.requires_grad)},
        "training": {"steps": recipe.steps, "final_loss_mean_last10": round(sum(r["loss"] for r in log[-10:]) / len(log[-10:]), 4),
                     "loss": [r["loss"] for r in log]},
        "build": {"seconds_distill": round(t_distill, 1), "seconds_train": round(t_train, 1),
                  "answers_generated": generated,
                  "answers_from_cache": n_answers - generated,
                  "device": str(model.device), "threads": torch.get_num_threads(),
                  "cpu": platform.processor() or platform.machine(),
                  "cpu_count": os.cpu_count(), **cpu_info()},
        "provenance": provenance(),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    # Finished: a later build of the same recipe must train from the start, not resume this one's last checkpoint.
    (work / "checkpoint.pt").unlink(missing_ok=True)
    if progress:
        print(f"safetyheads: built {recipe.name} in {(time.time() - t0) / 60:.1f} min -> {out}", file=sys.stderr)
    return manifest
