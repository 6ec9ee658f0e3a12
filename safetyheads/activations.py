"""Last-token activations: the final-layer, post-final-norm hidden state of each query's last token."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Sequence

import torch

from .ablation import AblationSpec, ablate
from .arch import final_norm_module
from .prompts import adds_special_tokens, format_prompt


@torch.no_grad()
def last_token_states(
    model,
    tok,
    prompts: Sequence[str],
    template: str = "paper",
    *,
    system_prompt: str | None = None,
    ablation: AblationSpec | None = None,
    batch_size: int = 16,
) -> torch.Tensor:
    """``[N, d]`` float32 on the CPU, batched with left padding (equal to batch-1 runs within ~1e-5)."""
    texts = [format_prompt(tok, p, template, system_prompt) for p in prompts]
    add_special = adds_special_tokens(template)
    captured: list[torch.Tensor] = []
    norm = final_norm_module(model)
    handle = norm.register_forward_hook(lambda module, args, output: captured.append(output[:, -1].float().cpu()))
    side = tok.padding_side
    tok.padding_side = "left"  # so every row's last token sits at position -1
    try:
        with ablate(model, ablation) if ablation is not None else nullcontext():
            for start in range(0, len(texts), batch_size):
                enc = tok(texts[start : start + batch_size], return_tensors="pt", padding=True,
                          add_special_tokens=add_special).to(model.device)
                # Positions count real tokens only, so left padding cannot shift absolute position
                # embeddings (GPT-2); RoPE models are unaffected either way.
                positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
                model(**enc, position_ids=positions, use_cache=False, logits_to_keep=1)
    finally:
        handle.remove()
        tok.padding_side = side
    return torch.cat(captured)
