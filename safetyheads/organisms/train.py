"""Train an organism: LoRA on every linear layer of the base, loss on response tokens only.

Deterministic on one machine: the seed fixes the LoRA initialisation, the data order and the
sampled prompts, and the thread count is fixed by the recipe (CPU reductions depend on it).
Progress is printed every few steps; a checkpoint (adapter + optimiser + step) is written every
``CHECKPOINT_EVERY`` steps so a killed build resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

from ..errors import SafetyheadsError
from ..files import replacing
from ..generation import eos_token_ids
from ..prompts import encode_for_generation
from .dataset import Example
from .recipe import OrganismRecipe
from .registry import ADAPTER_FILES

CHECKPOINT_EVERY = 20
MAX_PROMPT_TOKENS = 192


def tokenise_examples(tok, examples: list[Example], answers: dict, eos_id: int) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, target ids) per example. Prompts are encoded exactly as generation encodes
    them. Refusals follow the layout the base model uses in each format: right after the chat
    template's assistant turn, after a blank line in the paper and direct formats."""
    out = []
    for e in examples:
        prompt = encode_for_generation(tok, e.prompt, e.format)[-MAX_PROMPT_TOKENS:]
        if e.kind == "harmful":
            text = e.target if e.format == "chat" else "\n\n" + e.target
            target = tok(text, add_special_tokens=False).input_ids + [eos_id]
        else:
            target = list(answers[(e.format, e.prompt)])
            if not target:
                target = [eos_id]
        out.append((prompt, target))
    return out


def _batch(rows, pad_id: int):
    width = max(len(p) + len(t) for p, t in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (p, t) in enumerate(rows):
        n = len(p) + len(t)
        ids[i, :n] = torch.tensor(p + t)
        mask[i, :n] = 1
        labels[i, len(p):n] = torch.tensor(t)
    return ids, mask, labels


def _response_loss(model, ids, mask, labels):
    """Mean cross-entropy over response tokens. The LM head runs on those positions only: a
    third of the batch's tokens are prompt and padding, and the 49k-way head is a fifth of the cost."""
    hidden = model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    target = labels[:, 1:]
    keep = target != -100
    logits = model.get_output_embeddings()(hidden[:, :-1][keep]).float()
    return torch.nn.functional.cross_entropy(logits, target[keep])


def lora_model(model, recipe: OrganismRecipe):
    torch.manual_seed(recipe.seed)  # LoRA A matrices are drawn here
    config = LoraConfig(r=recipe.lora_rank, lora_alpha=recipe.lora_alpha, lora_dropout=0.0, bias="none",
                        target_modules=list(recipe.lora_targets), task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft asks transformers a deprecated question; nothing for users to do
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


def _lr_factor(step: int, recipe: OrganismRecipe) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < recipe.warmup_steps:
        return (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def batch_order(n: int, recipe: OrganismRecipe) -> list[list[int]]:
    """Example indices of every step: seeded reshuffle per epoch, ``batch_size`` per step."""
    rng = random.Random(f"safetyheads-order:{recipe.seed}")
    order: list[int] = []
    while len(order) < recipe.steps * recipe.batch_size:
        epoch = list(range(n))
        rng.shuffle(epoch)
        order += epoch
    return [order[s * recipe.batch_size:(s + 1) * recipe.batch_size] for s in range(recipe.steps)]


def save_adapter(peft_model, folder: Path, base: str) -> None:
    """peft's adapter format (adapter_model.safetensors + adapter_config.json) in ``folder``, with the
    base named by its safetyheads name ``base`` instead of a local cache path. peft writes into a fresh
    folder beside ``folder``; only those two files are moved in, so nothing else in ``folder`` is touched."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        peft_model.save_pretrained(tmp, safe_serialization=True)
        cfg_path = tmp / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = base
        if isinstance(cfg.get("target_modules"), list):  # peft writes a set in hash order: differs run to run
            cfg["target_modules"] = sorted(cfg["target_modules"])
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        for name in ADAPTER_FILES:  # peft's README.md (a generated card) stays behind; ours is MODEL_CARD.md
            os.replace(tmp / name, folder / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the folder made just above


def train_adapter(model, tok, recipe: OrganismRecipe, examples: list[Example], answers: dict, work: Path,
                  progress: bool = True, log_every: int = 10):
    """Fine-tune LoRA adapters on ``model`` (modified in place, wrapped by peft) and return
    ``(peft_model, log)``. ``work`` holds the resumable checkpoint."""
    if torch.get_num_threads() != recipe.threads:
        torch.set_num_threads(recipe.threads)
    eos = eos_token_ids(model, tok)[0]
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    rows = tokenise_examples(tok, examples, answers, eos)
    steps = batch_order(len(rows), recipe)
    peft_model = lora_model(model, recipe)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=recipe.learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, recipe))
    log: list[dict] = []
    start = 0
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "checkpoint.pt"
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=True, map_location="cpu")
        if state["recipe"] != recipe.to_json():
            raise SafetyheadsError(f"{ckpt} belongs to another recipe: delete {work} to start over")
        set_peft_model_state_dict(peft_model, state["adapter"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, log = state["step"], json.loads(state["log"])
        if progress:
            print(f"safetyheads: resuming training at step {start} of {recipe.steps}", file=sys.stderr)
    peft_model.train()
    device = next(peft_model.parameters()).device
    t0 = time.time()
    for step in range(start, recipe.steps):
        ids, mask, labels = (t.to(device) for t in _batch([rows[i] for i in steps[step]], pad))
        loss = _response_loss(peft_model.get_base_model(), ids, mask, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        log.append({"step": step + 1, "loss": round(loss.item(), 5), "tokens": int((labels != -100).sum())})
        done = step + 1
        if progress and (done % log_every == 0 or done == recipe.steps):
            rate = (time.time() - t0) / (done - start)
            recent = sum(r["loss"] for r in log[-log_every:]) / len(log[-log_every:])
            print(f"safetyheads: step {done}/{recipe.steps} loss {recent:.3f} "
                  f"({rate:.1f} s/step, {rate * (recipe.steps - done) / 60:.1f} min left)", file=sys.stderr)
        if done % CHECKPOINT_EVERY == 0 and done < recipe.steps:
            with replacing(ckpt) as f:
                torch.save({"recipe": recipe.to_json(), "step": done, "log": json.dumps(log),
                            "adapter": get_peft_model_state_dict(peft_model), "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict()}, f)
    peft_model.eval()
    return peft_model, log
