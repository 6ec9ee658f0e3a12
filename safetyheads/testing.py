"""Tiny random-init models of every supported family, built in-process (no downloads).

Used by the test suite, the paper profile's dry code path and the benchmarks. Weights are
re-drawn larger than transformers' init so that attention patterns are far from uniform and
biases are non-zero: an ablation that does nothing would then be visible.
"""

from __future__ import annotations

import torch
import transformers as tf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

TINY_FAMILIES = ("llama", "llama-gqa", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "gpt2")

_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_tokenizer():
    """A byte-level tokenizer (256 byte tokens + BOS/EOS) with a toy chat template."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab["<s>"] = len(vocab)
    vocab["</s>"] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="</s>")
    tok.chat_template = _CHAT_TEMPLATE
    return tok


def tiny_config(family: str, n_layers: int = 3, vocab_size: int = 258):
    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        tie_word_embeddings=False,
    )
    if family == "llama":
        return tf.LlamaConfig(**common)
    if family == "llama-gqa":
        return tf.LlamaConfig(**{**common, "num_key_value_heads": 2})
    if family == "mistral":
        return tf.MistralConfig(**{**common, "num_key_value_heads": 2, "sliding_window": None})
    if family == "qwen2":
        return tf.Qwen2Config(**{**common, "num_key_value_heads": 2})
    if family == "qwen3":
        return tf.Qwen3Config(**{**common, "num_key_value_heads": 2, "head_dim": 16})
    if family == "gemma2":
        return tf.Gemma2Config(
            **{**common, "num_key_value_heads": 2, "head_dim": 16},
            attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0,
            sliding_window=4,
        )
    if family == "gemma3":
        return tf.Gemma3TextConfig(
            **{**common, "num_key_value_heads": 2, "head_dim": 16},
            sliding_window=4,
            final_logit_softcapping=30.0,
        )
    if family == "gpt2":
        return tf.GPT2Config(
            vocab_size=vocab_size,
            n_embd=64,
            n_layer=n_layers,
            n_head=4,
            n_positions=256,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
        )
    raise ValueError(f"no tiny config for {family!r}; choose one of {', '.join(TINY_FAMILIES)}")


def tiny_model(family: str, attn_implementation: str = "eager", seed: int = 0, n_layers: int = 3):
    """A random-init *ForCausalLM of ``family`` in fp32 eval mode."""
    config = tiny_config(family, n_layers=n_layers)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.split(".")[-2].startswith("ln"):
                # RMSNorm/LayerNorm gains near 1 (Gemma stores gain - 1, so near 0 there).
                base = 0.0 if family.startswith("gemma") else 1.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=gen))
    return model.eval()
