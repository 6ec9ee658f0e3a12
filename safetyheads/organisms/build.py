"""Build an organism from its recipe: data -> self-distilled answers -> LoRA training -> adapter
folder with a manifest (recipe, seed, data hashes, adapter sha256, training log, timing).

A build writes exactly ``BUILD_FILES`` into its folder and never deletes anything there: it refuses,
before computing anything, a non-empty folder that is not an earlier build of the same organism
(unless ``overwrite``), stages its files in a fresh folder beside it, and moves them in at the end,
the manifest last.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..errors import SafetyheadsError
from ..files import cache_dir, sha256_file
from ..models import load_model
from ..provenance import cpu_info, provenance
from .dataset import build_examples, distill_answers, drop_gibberish_answers
from .recipe import OrganismRecipe
from .registry import ADAPTER_FILE
from .train import ADAPTER_FILES, save_adapter, train_adapter

BUILD_FILES = (*ADAPTER_FILES, "manifest.json")  # everything a build writes into its folder, manifest last


def _built_organism(folder: Path) -> "str | None":
    """The organism whose build ``folder`` holds (its manifest says), or None."""
    try:
        name = json.loads((folder / "manifest.json").read_text()).get("organism")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def check_out(out: Path, organism: str, overwrite: bool = False) -> None:
    """Refuse an output folder that a build of ``organism`` could damage, before anything is computed."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SafetyheadsError(f"--out {out} is a file: pass a folder for the adapter")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        previous = _built_organism(out)
        if previous != organism:
            what = f"a build of {previous}" if previous else f"not a build of {organism}"
            raise SafetyheadsError(
                f"--out {out} is not empty and is {what}: choose a new or empty folder, or pass --overwrite to "
                f"write {', '.join(BUILD_FILES)} into it (nothing else there is touched)")
    # The files are staged beside the folder, so its parent must be writable too.
    for folder in ([out] if out.is_dir() else []) + [out.parent]:
        existing = next(p for p in (folder.resolve(), *folder.resolve().parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise SafetyheadsError(f"cannot write to {existing}: choose another --out")


def recipe_key(recipe: OrganismRecipe) -> str:
    return hashlib.sha256(recipe.to_json().encode()).hexdigest()[:16]


def work_dir(recipe: OrganismRecipe) -> Path:
    """Where an interrupted build keeps its distilled answers and checkpoint (keyed by the recipe)."""
    return cache_dir() / "organisms" / f"{recipe.name}-{recipe_key(recipe)}"


def build_organism(recipe: OrganismRecipe, out: "str | Path", progress: bool = True, device: str = "auto",
                   fresh: bool = False, overwrite: bool = False) -> dict:
    """Train ``recipe`` and write its adapter folder to ``out``; returns the manifest. Trains in
    float32 on ``device`` (``auto``: a GPU when torch sees one); the committed organisms were built
    on the CPU with the recipe's thread count, and a GPU build differs from them in the last bits.
    An interrupted build resumes from its checkpoint, which a finished build deletes. ``fresh``:
    ignore an unfinished build's checkpoint and the cache of the base's distilled answers too.
    ``out`` must be new, empty or an earlier build of this organism; ``overwrite`` allows any folder.
    Only ``BUILD_FILES`` are written there (see the module docstring)."""
    out = Path(out)
    check_out(out, recipe.name, overwrite)
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
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=out.parent))
    try:
        manifest = _write_build(stage, peft_model, recipe, base_source, data_report, answers, n_answers, generated,
                                log, model, t_distill, t_train)
        check_out(out, recipe.name, overwrite)  # again: the folder may have changed while training
        out.mkdir(parents=True, exist_ok=True)
        kept = sorted(p.name for p in out.iterdir() if p.name not in BUILD_FILES)
        for name in BUILD_FILES:
            os.replace(stage / name, out / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # made above; empty unless the build failed
    # Finished: a later build of the same recipe must train from the start, not resume this one's last checkpoint.
    (work / "checkpoint.pt").unlink(missing_ok=True)
    if progress:
        if kept:
            print(f"safetyheads: left {', '.join(kept)} in {out} as they were (they may describe an earlier "
                  "adapter: evaluate again)", file=sys.stderr)
        print(f"safetyheads: built {recipe.name} in {(time.time() - t0) / 60:.1f} min -> {out}", file=sys.stderr)
    return manifest


def _write_build(stage: Path, peft_model, recipe: OrganismRecipe, base_source: dict, data_report: dict,
                 answers: dict, n_answers: int, generated: int, log: list, model, t_distill: float,
                 t_train: float) -> dict:
    """The adapter and its manifest, written into ``stage``; returns the manifest."""
    save_adapter(peft_model, stage, recipe.base)
    answers_digest = hashlib.sha256(json.dumps(sorted(
        [[f, p, ids] for (f, p), ids in answers.items()])).encode()).hexdigest()
    manifest = {
        "organism": recipe.name,
        "recipe": recipe.to_dict(),
        "base": {k: base_source[k] for k in ("model", "kind", "file", "sha256") if k in base_source},
        "data": {**data_report, "distilled_answers_sha256": answers_digest},
        "adapter": {"file": ADAPTER_FILE, "sha256": sha256_file(stage / ADAPTER_FILE),
                    "bytes": (stage / ADAPTER_FILE).stat().st_size,
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
    (stage / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest
