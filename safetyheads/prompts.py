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


def adds_special_tokens(template: str) -> bool:
    """Whether the tokenizer adds its special tokens to a prompt written with ``template``:
    chat-rendered text already holds them, so none are added there; ``direct``/``paper`` get the
    tokenizer's defaults (BOS for Llama-2), as in the authors' code. Every tokenisation of a
    formatted prompt asks this."""
    return template != "chat"


def generation_text(tok, query: str, template: str = "paper", system_prompt: str | None = None,
                    prefill: str | None = None) -> str:
    """The text the model continues: the formatted query, then ``prefill`` verbatim (no space added)."""
    if not isinstance(query, str) or not query.strip():
        raise DataError("empty prompt: every query must contain text")
    return format_prompt(tok, query, template, system_prompt) + (prefill or "")


def prompt_ids(tok, query: str, template: str, system_prompt: str | None = None,
               prefill: str | None = None) -> list[int]:
    """The prompt encoder: token ids of ``generation_text``, special tokens as ``adds_special_tokens``
    says. Ships, Sahara and generation all encode their prompts here."""
    text = generation_text(tok, query, template, system_prompt, prefill)
    ids = tok(text, add_special_tokens=adds_special_tokens(template)).input_ids
    if not ids:
        raise DataError(f"prompt {query[:40]!r} tokenises to nothing")
    return list(ids)


def encode_prompt(tok, query: str, template: str = "direct", system_prompt: str | None = None) -> torch.Tensor:
    """Token ids ``[1, T]`` of ``prompt_ids`` (the input of a Ships or Sahara sweep)."""
    return torch.tensor([prompt_ids(tok, query, template, system_prompt)], dtype=torch.long)


def encode_for_generation(tok, query: str, template: str = "paper", system_prompt: str | None = None,
                          prefill: str | None = None) -> list[int]:
    """Token ids of ``generation_text`` (``prompt_ids`` with generation's default template)."""
    return prompt_ids(tok, query, template, system_prompt, prefill)


# Tokenizers without a known limit report a huge sentinel (transformers' VERY_LARGE_INTEGER).
_NO_LIMIT = 10**9
# No tokenizer averages more characters per token over a whole prompt (its longest tokens, runs of
# spaces or dashes, hold 16 to 128 characters; text averages 3 to 5): a prompt longer than the
# context times this cannot fit, and is refused before it is tokenized (a 10 MB prompt takes
# gigabytes to tokenize). Without a known context, MAX_PROMPT_CHARS is the bound.
MAX_CHARS_PER_TOKEN = 64
MAX_PROMPT_CHARS = 1 << 24


def context_length(model, tok=None) -> "int | None":
    """Longest sequence the model takes: its position table (``max_position_embeddings``; GPT-2's
    ``n_positions`` maps onto it) or the tokenizer's ``model_max_length``, whichever is shorter;
    None when neither is known."""
    config = getattr(model, "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    limits = [getattr(text_config, "max_position_embeddings", None), getattr(tok, "model_max_length", None)]
    known = [int(n) for n in limits if isinstance(n, int) and 0 < n < _NO_LIMIT]
    return min(known) if known else None


def check_chars(n_chars: int, limit: "int | None", prompt_id, query: str) -> None:
    """Refuse, before tokenizing it, a prompt of ``n_chars`` characters (with its system prompt and
    prefill) that cannot fit a context of ``limit`` tokens (see MAX_CHARS_PER_TOKEN)."""
    bound = MAX_PROMPT_CHARS if limit is None else limit * MAX_CHARS_PER_TOKEN
    if n_chars <= bound:
        return
    what = f"prompt {prompt_id} ({query[:40]!r}{'...' if len(query) > 40 else ''})"
    context = "" if limit is None else f" for the model's context of {limit} tokens"
    raise DataError(f"{what} is {n_chars:,} characters, too long{context} (more than {bound:,} characters are "
                    "never tokenized): shorten it or leave it out")


def check_fits(n_tokens: int, limit: "int | None", prompt_id, query: str, new_tokens: int = 0) -> None:
    """Refuse a prompt (plus the tokens to generate) longer than the model's context: positions
    past it were never trained, and some models index out of their position table."""
    if limit is None or n_tokens + new_tokens <= limit:
        return
    what = f"prompt {prompt_id} ({query[:40]!r}{'...' if len(query) > 40 else ''})"
    if new_tokens and n_tokens <= limit:
        raise DataError(f"{what} is {n_tokens} tokens and --max-new-tokens is {new_tokens}: together more than the "
                        f"model's context of {limit} tokens; shorten the prompt or lower --max-new-tokens")
    raise DataError(f"{what} is {n_tokens} tokens, longer than the model's context of {limit} tokens: "
                    "shorten it or leave it out")
