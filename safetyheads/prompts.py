"""Prompt templates of the paper and their tokenisation."""

from __future__ import annotations

import torch

from .errors import DataError

TEMPLATES = ("direct", "paper", "chat")
PAPER_TEMPLATE = "## Query:{q}\n## Answer:"


def format_prompt(tok, query: str, template: str = "direct", system_prompt: str | None = None) -> str:
    """``direct``: the raw query; ``paper``: ``## Query:{q}\\n## Answer:``; ``chat``: the model's
    own chat template with the generation prompt (and ``system_prompt`` when given)."""
    if template == "direct":
        return query
    if template == "paper":
        return PAPER_TEMPLATE.format(q=query)
    if template == "chat":
        if not getattr(tok, "chat_template", None):
            raise DataError("template 'chat' needs a tokenizer with a chat template; this one has none (use direct or paper)")
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": query}
        ]
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    raise DataError(f"unknown prompt template {template!r}: choose one of {', '.join(TEMPLATES)}")


def encode_prompt(tok, query: str, template: str = "direct", system_prompt: str | None = None) -> torch.Tensor:
    """Token ids ``[1, T]``. Chat-rendered text already holds its special tokens, so the tokenizer
    adds none there; ``direct``/``paper`` get the tokenizer's defaults (BOS for Llama-2), as in the
    authors' code."""
    if not isinstance(query, str) or not query.strip():
        raise DataError("empty prompt: every query must contain text")
    text = format_prompt(tok, query, template, system_prompt)
    ids = tok(text, add_special_tokens=(template != "chat"), return_tensors="pt").input_ids
    if ids.shape[1] == 0:
        raise DataError(f"prompt {query[:40]!r} tokenises to nothing")
    return ids
