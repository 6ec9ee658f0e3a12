"""Ships scores: the three sweep strategies agree, and match a from-scratch computation."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from safetyheads.ablation import GQAGroupWarning
from safetyheads.errors import DataError, SafetyheadsError
from safetyheads.heads import HeadRef, all_heads
from safetyheads.ships import kl_from_logits, ships_for_ids, ships_scores, top_heads
from safetyheads.testing import TINY_FAMILIES

from conftest import (
    FAMILY_IMPL_IDS,
    FAMILY_IMPLS,
    N_HEADS,
    N_LAYERS,
    QK_NORM_LAYOUT,
    attn_module,
    get_model,
    head_dim,
    logits,
    out_proj,
)
from tolerances import EPS32, f64_kl_atol, forward_atol, kl_atol, ships_atol

ALL_HEADS = [HeadRef(l, h) for l in range(N_LAYERS) for h in range(N_HEADS)]
SHIPS_METHODS = [("ua", "q"), ("sc", "out"), ("mean", "q"), ("ua", "k")]


def _ships_close(actual: torch.Tensor, expected: torch.Tensor, clean_logits: torch.Tensor, model) -> None:
    """Ships from forward passes of other batch shapes (fp32 summed in another order) agree
    elementwise within ships_atol: the clean pass is shared, the ablated logits move by up to
    forward_atol (scaled by the model's logits)."""
    assert actual.shape == expected.shape
    allowed = ships_atol(expected, forward_atol(model, clean_logits))
    diff = (actual - expected).abs()
    i = int(diff.argmax())
    assert (diff <= allowed).all(), f"diff {diff[i]:.3g} at score {expected[i]:.3g}, allowed {allowed[i]:.3g}"


# ------------------------------------------------------------------------------------------------
# The three strategies agree


@pytest.mark.parametrize("method,target", SHIPS_METHODS, ids=[f"{m}-{t}" for m, t in SHIPS_METHODS])
@pytest.mark.parametrize("family,impl", FAMILY_IMPLS, ids=FAMILY_IMPL_IDS)
def test_strategies_agree(family, impl, method, target, prompt_ids):
    model = get_model(family, impl)
    clean_before = logits(model, prompt_ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GQAGroupWarning)
        rows, naive = ships_for_ids(model, prompt_ids, method=method, target=target, strategy="naive")
        assert rows == tuple(ALL_HEADS)
        assert naive.dtype == torch.float64 and naive.shape == (len(ALL_HEADS),)
        assert torch.isfinite(naive).all() and (naive >= 0).all()
        # the scores vary between heads (a sweep that ablates nothing, or always the same head, fails;
        # 1e-3 is a lower bound on that effect, not rounding)
        assert naive.max() > 0 and naive.std() > 1e-3 * naive.max()
        for strategy in ("batched", "prefix"):
            for bs in (1, 5, 100):
                seen = []
                r, s = ships_for_ids(
                    model, prompt_ids, method=method, target=target, strategy=strategy, batch_size=bs,
                    on_chunk=seen.append,
                )
                assert r == rows
                assert sum(seen) == len(rows) and max(seen) <= bs
                _ships_close(s, naive, clean_before, model)
    # the sweep leaves the model clean
    assert torch.equal(logits(model, prompt_ids), clean_before)


@pytest.mark.parametrize("strategy", ["naive", "batched", "prefix"])
@pytest.mark.parametrize("family", ["llama-gqa", "gemma2", "gpt2"])
def test_head_subset_sorted_layer_major(family, strategy, prompt_ids):
    model = get_model(family, "eager")
    _, full = ships_for_ids(model, prompt_ids, strategy="naive")
    rows, sub = ships_for_ids(model, prompt_ids, heads=["L2H1", "L0H3", "1-2", "L0H3"], strategy=strategy, batch_size=2)
    assert rows == (HeadRef(0, 3), HeadRef(1, 2), HeadRef(2, 1))
    idx = [ALL_HEADS.index(h) for h in rows]
    _ships_close(sub, full[idx], logits(model, prompt_ids), model)


def test_ua_k_scores_equal_within_a_kv_group(prompt_ids):
    """On GQA a k-ablation hits the whole KV group: heads of one group get the same Ships."""
    model = get_model("llama-gqa", "eager")
    with pytest.warns(GQAGroupWarning):
        rows, s = ships_for_ids(model, prompt_ids, method="ua", target="k", strategy="prefix")
    s = s.view(N_LAYERS, 2, 2)  # layer, kv group, head in group
    _ships_close(s[..., 0], s[..., 1], logits(model, prompt_ids), model)  # one ablation, two batch rows
    assert not torch.allclose(s[:, 0], s[:, 1], rtol=1e-3)  # effect size: the groups differ


# ------------------------------------------------------------------------------------------------
# Independent Ships: plain model, our own hook, our own KL


def _scaling_hook(model, family: str, layer: int, head: int, kind: str, eps: float):
    """Register a hook that scales one head's q (where attention sees it) or output slice by eps."""
    hd = head_dim(model)
    attn = attn_module(model, family, layer)
    sl = slice(head * hd, (head + 1) * hd)
    if kind == "out":

        def pre(module, args):
            x = args[0].clone()
            x[..., sl] *= eps
            return (x, *args[1:])

        return out_proj(model, family, layer).register_forward_pre_hook(pre)

    if family in QK_NORM_LAYOUT:  # after the per-head norm, which would undo a scaled projection
        layout = QK_NORM_LAYOUT[family]

        def post(module, args, out):
            out = out.clone()
            if layout == "bthd":
                out[:, :, head] *= eps
            else:
                out[:, head] *= eps
            return out

        return attn.q_norm.register_forward_hook(post)

    module = attn.c_attn if family == "gpt2" else attn.q_proj  # GPT-2: q is the first third of c_attn

    def post(module, args, out):
        out = out.clone()
        out[..., sl] *= eps
        return out

    return module.register_forward_hook(post)


def _kl_explicit(clean: torch.Tensor, ablated: torch.Tensor, floor: float = 0.0) -> float:
    p = torch.softmax(clean.double(), -1)
    q = torch.softmax(ablated.double(), -1)
    if floor:
        return float((p * ((p + floor).log() - (q + floor).log())).sum())
    return float((p * (p.log() - q.log())).sum())


@pytest.mark.parametrize("kind,method,eps", [("q", "ua", 1e-5), ("q", "ua", 0.1), ("out", "sc", 1e-5)])
@pytest.mark.parametrize("family,impl", FAMILY_IMPLS, ids=FAMILY_IMPL_IDS)
def test_ships_matches_independent_computation(family, impl, kind, method, eps, prompt_ids):
    model = get_model(family, impl)
    layer, head = 1, 2
    with torch.no_grad():
        clean = model(input_ids=prompt_ids, use_cache=False).logits[0, -1]
        handle = _scaling_hook(model, family, layer, head, kind, eps)
        try:
            ablated = model(input_ids=prompt_ids, use_cache=False).logits[0, -1]
        finally:
            handle.remove()
    lp, lq = F.log_softmax(clean.double(), -1), F.log_softmax(ablated.double(), -1)
    expected = F.kl_div(lq, lp, log_target=True, reduction="sum").item()
    assert math.isclose(expected, _kl_explicit(clean, ablated), rel_tol=0, abs_tol=f64_kl_atol(clean.numel()))
    assert expected > 1e-6  # effect size: the ablation moves the distribution
    expected_floor = _kl_explicit(clean, ablated, 1e-12)
    # The library computes the clean logits of the last position alone (a GEMM of another shape)
    # and the ablated ones through its own hooks and batch shapes: both move by up to forward_atol.
    # (The 1e-12 floor only damps the KL's sensitivity to the logits: p / (p + floor) <= 1.)
    atol = kl_atol(clean, ablated, forward_atol(model, torch.stack([clean, ablated])))
    for strategy in ("naive", "batched", "prefix"):
        rows, s = ships_for_ids(model, prompt_ids, heads=[HeadRef(layer, head)], method=method, eps=eps, strategy=strategy)
        assert rows == (HeadRef(layer, head),)
        assert abs(s[0].item() - expected) <= atol, (strategy, s[0].item(), expected, atol)
        _, s_floor = ships_for_ids(
            model, prompt_ids, heads=[HeadRef(layer, head)], method=method, eps=eps, strategy=strategy, prob_floor=1e-12
        )
        assert abs(s_floor[0].item() - expected_floor) <= atol, (strategy, s_floor[0].item(), expected_floor, atol)


def test_ships_depends_on_eps_and_method(prompt_ids):
    model = get_model("llama", "eager")
    _, ua5 = ships_for_ids(model, prompt_ids, method="ua", eps=1e-5)
    _, ua1 = ships_for_ids(model, prompt_ids, method="ua", eps=0.9)
    _, sc5 = ships_for_ids(model, prompt_ids, method="sc", eps=1e-5)
    assert (ua1 < ua5).float().mean() > 0.5  # a gentle scaling moves less, for most heads
    assert not torch.allclose(ua5, sc5, rtol=1e-2)  # effect size: the methods differ


# ------------------------------------------------------------------------------------------------
# kl_from_logits


def test_kl_of_identical_logits_is_zero():
    g = torch.Generator().manual_seed(1)
    x = 3 * torch.randn(50, generator=g)
    assert kl_from_logits(x, x[None]).abs().max().item() <= f64_kl_atol(50)
    # softmax is shift-invariant, but x + 7 is rounded to fp32: each logit moves by d <= half an
    # ulp, and a KL of logits that differ by <= d is about Var_p(shift) / 2 <= d^2 / 2
    shifted = x[None] + 7.0
    d = EPS32 / 2 * shifted.abs().max().item()
    assert kl_from_logits(x, shifted).abs().max().item() <= d**2 + f64_kl_atol(50)
    assert kl_from_logits(x, x[None], prob_floor=1e-12).abs().max().item() <= f64_kl_atol(50)


def test_kl_matches_manual_formula_and_kl_div():
    g = torch.Generator().manual_seed(2)
    clean = 4 * torch.randn(200, generator=g)
    ablated = clean[None] + 2 * torch.randn(6, 200, generator=g)
    got = kl_from_logits(clean, ablated)
    assert got.dtype == torch.float64 and got.shape == (6,)
    p = torch.softmax(clean.double(), -1)
    for r in range(6):
        q = torch.softmax(ablated[r].double(), -1)
        manual = (p * (p / q).log()).sum().item()
        assert math.isclose(got[r].item(), manual, rel_tol=0, abs_tol=f64_kl_atol(200))
        ref = F.kl_div(q.log(), p, reduction="sum").item()
        assert math.isclose(got[r].item(), ref, rel_tol=0, abs_tol=f64_kl_atol(200))
    assert (got > 0).all()
    # KL is not symmetric: the arguments are (clean, ablated) in that order (effect size, not rounding)
    reverse = torch.stack([kl_from_logits(ablated[r], clean[None])[0] for r in range(6)])
    assert not torch.allclose(got, reverse, rtol=1e-3)


def test_kl_prob_floor_matches_authors_formula():
    g = torch.Generator().manual_seed(3)
    clean = 30 * torch.randn(300, generator=g)  # peaked: many probabilities far below 1e-12
    ablated = 30 * torch.randn(4, 300, generator=g)
    p = torch.softmax(clean.double(), -1)
    q = torch.softmax(ablated.double(), -1)
    authors = (p * ((p + 1e-12).log() - (q + 1e-12).log())).sum(-1)
    got = kl_from_logits(clean, ablated, prob_floor=1e-12)
    assert torch.allclose(got, authors, rtol=0, atol=f64_kl_atol(300))
    exact = kl_from_logits(clean, ablated)
    assert not torch.allclose(got, exact, rtol=1e-3)  # effect size: the floor matters for peaked distributions


def test_kl_is_computed_in_float64():
    """fp32 logits whose KL is far below fp32 resolution still give the right tiny value."""
    clean = torch.zeros(1000)
    clean[0] = 5.0
    ablated = clean.clone()
    ablated[1] = 1e-3
    got = kl_from_logits(clean, ablated[None]).item()
    p = torch.softmax(clean.double(), -1)
    q = torch.softmax(ablated.double(), -1)
    # ~4e-10, known to f64_kl_atol (~1e-12); fp32 logs would be off by ~1e-6
    assert math.isclose(got, (p * (p / q).log()).sum().item(), rel_tol=0, abs_tol=f64_kl_atol(1000))
    assert got > 0


# ------------------------------------------------------------------------------------------------
# ships_scores and top_heads

PROMPTS = ["How do I bake bread?", "Name a prime number."]


def _chat_text(q, system=None):
    # the tiny tokenizer's chat template, rendered by hand
    return (f"<|system|>{system}\n" if system else "") + f"<|user|>{q}\n<|assistant|>"


@pytest.mark.parametrize("template", ["direct", "paper", "chat"])
def test_ships_scores_dataframe(template, tok):
    model = get_model("qwen2", "eager")
    table = ships_scores(model, tok, PROMPTS, template=template, prompt_ids=["a", "b"])
    assert list(table.columns) == ["prompt_id", "layer", "head", "head_name", "ships"]
    assert len(table) == len(PROMPTS) * N_LAYERS * N_HEADS
    assert list(table["prompt_id"].unique()) == ["a", "b"]
    assert (table.groupby("prompt_id").size() == N_LAYERS * N_HEADS).all()
    assert (table["head_name"] == [f"L{l}H{h}" for l, h in zip(table["layer"], table["head"])]).all()
    assert (table["ships"] >= 0).all()
    # each prompt's scores are the sweep of the text the template renders
    texts = {
        "direct": PROMPTS,
        "paper": [f"## Query:{q}\n## Answer:" for q in PROMPTS],
        "chat": [_chat_text(q) for q in PROMPTS],
    }[template]
    for pid, text in zip(["a", "b"], texts):
        ids = tok(text, return_tensors="pt", add_special_tokens=template != "chat").input_ids
        _, expected = ships_for_ids(model, ids, strategy="naive")
        got = torch.tensor(table.loc[table["prompt_id"] == pid, "ships"].to_numpy())
        _ships_close(got, expected, logits(model, ids), model)


def test_ships_scores_templates_differ_and_system_prompt_used(tok):
    model = get_model("llama", "eager")
    direct = ships_scores(model, tok, PROMPTS[:1], template="direct")["ships"]
    paper = ships_scores(model, tok, PROMPTS[:1], template="paper")["ships"]
    assert not (direct - paper).abs().lt(1e-6).all()  # effect size: the template changes the scores
    chat_sys = ships_scores(model, tok, PROMPTS[:1], template="chat", system_prompt="You are a helpful assistant")
    ids = tok(_chat_text(PROMPTS[0], "You are a helpful assistant"), return_tensors="pt", add_special_tokens=False).input_ids
    _, expected = ships_for_ids(model, ids)
    _ships_close(torch.tensor(chat_sys["ships"].to_numpy()), expected, logits(model, ids), model)


def test_ships_scores_head_subset_and_method(tok):
    model = get_model("gpt2", "eager")
    table = ships_scores(model, tok, PROMPTS, heads="L2H3,L0H1", method="sc", eps=1e-3)
    assert len(table) == len(PROMPTS) * 2
    assert list(table["head_name"]) == ["L0H1", "L2H3"] * 2
    assert list(table["prompt_id"]) == [0, 0, 1, 1]
    ids = tok(PROMPTS[1], return_tensors="pt").input_ids
    _, expected = ships_for_ids(model, ids, heads="L0H1,L2H3", method="sc", eps=1e-3, strategy="naive")
    _ships_close(torch.tensor(table["ships"].to_numpy()[2:]), expected, logits(model, ids), model)


def test_ships_scores_on_prompt_callback(tok):
    model = get_model("llama", "eager")
    seen = []
    table = ships_scores(model, tok, PROMPTS, on_prompt=lambda pid, rows: seen.append((pid, len(rows))))
    assert seen == [(0, 12), (1, 12)]
    assert len(table) == 24


@pytest.mark.parametrize("template", ["bogus", "Direct", ""])
def test_ships_scores_unknown_template(template, tok):
    with pytest.raises(DataError) as info:
        ships_scores(get_model("llama"), tok, PROMPTS, template=template)
    assert isinstance(info.value, SafetyheadsError) and "\n" not in str(info.value)


@pytest.mark.parametrize("bad", ["", "   ", "\n"])
def test_ships_scores_empty_prompt_fails_before_any_compute(bad, tok):
    calls = []
    with pytest.raises(DataError) as info:
        ships_scores(get_model("llama"), tok, ["fine", bad], on_prompt=lambda *a: calls.append(a))
    assert "\n" not in str(info.value)
    assert calls == []


def test_ships_scores_prompt_ids_must_match(tok):
    with pytest.raises(ValueError):
        ships_scores(get_model("llama"), tok, PROMPTS, prompt_ids=[1])


def test_ships_for_ids_rejects_bad_strategy_and_batch(prompt_ids):
    model = get_model("llama")
    with pytest.raises(ValueError):
        ships_for_ids(model, prompt_ids, strategy="fast")
    with pytest.raises(ValueError):
        ships_for_ids(model, prompt_ids, batch_size=0)


def test_top_heads_sorted_by_mean():
    import pandas as pd

    rows = []
    values = {"L0H0": [1.0, 2.0], "L0H1": [5.0, 0.0], "L1H0": [3.0, 4.0], "L1H1": [0.1, 0.2]}
    for name, vals in values.items():
        ref = HeadRef.parse(name)
        for pid, v in enumerate(vals):
            rows.append({"prompt_id": pid, "layer": ref.layer, "head": ref.head, "head_name": name, "ships": v})
    table = pd.DataFrame(rows)
    top = top_heads(table, k=3)
    assert list(top["head_name"]) == ["L1H0", "L0H1", "L0H0"]
    assert list(top["mean_ships"]) == [3.5, 2.5, 1.5]
    assert list(top["n_prompts"]) == [2, 2, 2]
    assert list(top["layer"]) == [1, 0, 0] and list(top["head"]) == [0, 1, 0]
    assert math.isclose(top["std_ships"][1], math.sqrt(12.5))
    assert list(top_heads(table, k=10)["head_name"]) == ["L1H0", "L0H1", "L0H0", "L1H1"]


def test_top_heads_on_a_real_sweep(tok):
    model = get_model("mistral", "eager")
    table = ships_scores(model, tok, PROMPTS, template="paper")
    top = top_heads(table, k=5)
    assert len(top) == 5
    means = list(top["mean_ships"])
    assert means == sorted(means, reverse=True)
    manual = table.groupby("head_name")["ships"].mean().sort_values(ascending=False)
    assert list(top["head_name"]) == list(manual.index[:5])
    assert torch.allclose(torch.tensor(means, dtype=torch.float64), torch.tensor(manual.to_numpy()[:5]))
