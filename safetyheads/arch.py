"""The architecture table: where each supported family keeps its attention heads.

Everything that differs between Hugging Face model families lives in ``ARCHITECTURES``;
the ablation hooks, the Ships sweep and the weight surgery read only this table, and the model's
output head (final norm, LM head, logit soft-capping) is applied here too.
Adding a family is one ``ArchSpec`` entry (plus its tiny model in ``safetyheads/testing.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class Site:
    """Where one projection's per-head values can be read and edited.

    ``module`` is a dotted path relative to the attention module. ``section``/``n_sections``
    pick one projection out of a fused output (GPT-2's ``c_attn`` is q|k|v). ``layout`` is
    ``"flat"`` for ``[batch, time, sections*heads*head_dim]`` tensors (projection outputs and
    the output projection's input); the per-head q/k RMS norms of qk-norm families see
    ``"bthd"`` = ``[batch, time, heads, head_dim]`` (Qwen 3) or ``"bhtd"`` (Gemma 3, after the transpose).
    """

    module: str
    section: int = 0
    n_sections: int = 1
    layout: str = "flat"


@dataclass(frozen=True)
class ArchSpec:
    family: str
    model_types: tuple[str, ...]
    layers: str  # dotted path from the *ForCausalLM to the decoder-layer ModuleList
    final_norm: str  # dotted path from the *ForCausalLM to the norm before the LM head
    attn: str  # attention module, relative to a decoder layer
    # Hook sites: the value the attention kernel sees for q and k (after any qk-norm), v, and
    # the concatenated head outputs entering the output projection (a forward *pre*-hook).
    q: Site
    k: Site
    v: Site
    out: Site
    # Weight sites for surgery: the linear layers whose rows (q/k/v) or input columns (out) hold a head.
    q_weight: Site
    k_weight: Site
    v_weight: Site
    # True when q and k are RMS-normalised per head after the projection: scaling q_proj rows
    # is then undone by the norm, so UA cannot be written into the weights except with eps = 0.
    qk_norm: bool = False
    lm_head: str = "lm_head"


def _hf_attention(family: str, model_types: tuple[str, ...], qk_norm_layout: str | None = None) -> ArchSpec:
    """The Llama-style layout most families share: separate q/k/v/o projections."""
    qk_norm = qk_norm_layout is not None
    return ArchSpec(
        family=family,
        model_types=model_types,
        layers="model.layers",
        final_norm="model.norm",
        attn="self_attn",
        q=Site("q_norm", layout=qk_norm_layout) if qk_norm else Site("q_proj"),
        k=Site("k_norm", layout=qk_norm_layout) if qk_norm else Site("k_proj"),
        v=Site("v_proj"),
        out=Site("o_proj"),
        q_weight=Site("q_proj"),
        k_weight=Site("k_proj"),
        v_weight=Site("v_proj"),
        qk_norm=qk_norm,
    )


ARCHITECTURES: tuple[ArchSpec, ...] = (
    _hf_attention("llama", ("llama",)),
    _hf_attention("mistral", ("mistral",)),
    _hf_attention("qwen2", ("qwen2",)),  # q/k/v carry a bias: surgery scales it with the rows
    _hf_attention("qwen3", ("qwen3",), qk_norm_layout="bthd"),
    _hf_attention("gemma2", ("gemma2",)),
    _hf_attention("gemma3", ("gemma3_text",), qk_norm_layout="bhtd"),
    ArchSpec(
        family="gpt2",
        model_types=("gpt2",),
        layers="transformer.h",
        final_norm="transformer.ln_f",
        attn="attn",
        q=Site("c_attn", section=0, n_sections=3),
        k=Site("c_attn", section=1, n_sections=3),
        v=Site("c_attn", section=2, n_sections=3),
        out=Site("c_proj"),
        q_weight=Site("c_attn", section=0, n_sections=3),
        k_weight=Site("c_attn", section=1, n_sections=3),
        v_weight=Site("c_attn", section=2, n_sections=3),
    ),
)

SUPPORTED_FAMILIES = ", ".join(a.family for a in ARCHITECTURES)


@dataclass(frozen=True)
class Geometry:
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden_size: int

    @property
    def group_size(self) -> int:
        """Query heads sharing one key/value head (1 for MHA)."""
        return self.n_heads // self.n_kv_heads

    @property
    def is_gqa(self) -> bool:
        return self.n_kv_heads != self.n_heads

    def kv_head_of(self, head: int) -> int:
        return head // self.group_size


def _config(model):
    cfg = model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def get_arch(model) -> ArchSpec:
    model_type = getattr(_config(model), "model_type", None)
    for spec in ARCHITECTURES:
        if model_type in spec.model_types:
            return spec
    raise UnsupportedArchitectureError(
        f"model type {model_type!r} is not supported; supported families: {SUPPORTED_FAMILIES} "
        "(add one entry to safetyheads.arch.ARCHITECTURES to support another)"
    )


def geometry(model) -> Geometry:
    get_arch(model)  # unsupported models fail here with the family list, not with an AttributeError
    cfg = _config(model)
    n_heads = cfg.num_attention_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    return Geometry(cfg.num_hidden_layers, n_heads, n_kv, head_dim, cfg.hidden_size)


def get_path(root: torch.nn.Module, path: str) -> torch.nn.Module:
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def decoder_layers(model) -> torch.nn.ModuleList:
    return get_path(model, get_arch(model).layers)


def attention_module(model, layer: int) -> torch.nn.Module:
    return get_path(decoder_layers(model)[layer], get_arch(model).attn)


def site_module(model, layer: int, site: Site) -> torch.nn.Module:
    return get_path(attention_module(model, layer), site.module)


def final_norm_module(model) -> torch.nn.Module:
    """The norm between the last decoder layer and the LM head."""
    return get_path(model, get_arch(model).final_norm)


def final_norm(model, hidden: torch.Tensor) -> torch.Tensor:
    return final_norm_module(model)(hidden)


def lm_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The model's head on final-layer hidden states: final norm, LM head, logit soft-capping."""
    logits = get_path(model, get_arch(model).lm_head)(final_norm(model, hidden))
    cap = getattr(_config(model), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits
