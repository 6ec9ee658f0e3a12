"""Head ablations: checked against independent computations on every tiny family.

Every expected value here is derived from the plain model's own intermediate tensors read with
hooks written in this file / conftest.py (never through ``safetyheads.arch``): running means of the
value vectors for UA, scaled slices for SC, means over heads for mean ablation.
"""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from safetyheads.ablation import AblationSpec, GQAGroupWarning, ablate
from safetyheads.errors import AblationError, HeadError, SafetyheadsError
from safetyheads.heads import HeadRef
from safetyheads.testing import TINY_FAMILIES

from conftest import (
    FAMILY_IMPL_IDS,
    FAMILY_IMPLS,
    N_HEADS,
    N_LAYERS,
    SDPA_FAMILIES,
    attended_mask,
    capture,
    get_model,
    hook_count,
    kv_heads,
    logits,
)
from tolerances import EPS32, forward_atol, sum_atol

GQA_FAMILIES = tuple(f for f in TINY_FAMILIES if f not in ("llama", "gpt2"))
MHA_FAMILIES = ("llama", "gpt2")


def _group(family: str, head: int) -> list[int]:
    """Query heads that share ``head``'s KV head (just ``head`` for MHA)."""
    g = N_HEADS // (2 if family in GQA_FAMILIES else N_HEADS)
    kv = head // g
    return list(range(kv * g, (kv + 1) * g))


def _expected_uniform_output(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """values [T, D], mask [T, T] -> [T, D]: row i = mean of values[j] over attended j (float64)."""
    m = mask.double()
    return (m @ values.double()) / m.sum(-1, keepdim=True)


# ------------------------------------------------------------------------------------------------
# UA: the ablated head's attention becomes uniform over the causal prefix


@pytest.mark.parametrize("layer,head", [(1, 2), (2, 1)])
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_ua_output_is_running_mean_of_values(family, layer, head, prompt_ids):
    """o_proj input of the ablated head == running mean of its own value vectors (eager)."""
    model = get_model(family, "eager")
    T = prompt_ids.shape[1]
    kv = head // (N_HEADS // kv_heads(model))
    mask = attended_mask(model, family, layer, T)

    # q = 0 exactly: the softmax is exactly uniform over what the mask allows.
    with ablate(model, [HeadRef(layer, head)], method="zero", target="q"):
        with capture(model, family, "v", [layer]) as v, capture(model, family, "out", [layer]) as out:
            logits(model, prompt_ids)
    values = v[layer][0][0, :, kv]  # [T, D]
    actual = out[layer][0][0, :, head]  # [T, D]
    expected = _expected_uniform_output(values, mask)
    # fp32: weights 1/n (one rounding) times up to T values, summed in any order
    atol = sum_atol(T + 1, values.abs().max().item())
    assert torch.allclose(actual.double(), expected, rtol=0, atol=atol), (actual.double() - expected).abs().max()
    # and it is not what the clean head computes (the test can tell the difference; effect size)
    with capture(model, family, "out", [layer]) as clean_out:
        logits(model, prompt_ids)
    assert not torch.allclose(clean_out[layer][0][0, :, head].double(), expected, atol=1e-3)

    # UA proper (q times 1e-5) is uniform up to O(eps * |score|): a model error, not rounding
    # (1e-3 allows scores up to ~100)
    with ablate(model, [HeadRef(layer, head)], method="ua", eps=1e-5, target="q"):
        with capture(model, family, "out", [layer]) as out_ua:
            logits(model, prompt_ids)
    scale = values.abs().max().item()
    diff = (out_ua[layer][0][0, :, head].double() - expected).abs().max().item()
    assert diff <= 1e-3 * scale, (diff, scale)


@pytest.mark.parametrize("target", ["q", "k"])
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_ua_attention_weights_uniform(family, target, prompt_ids):
    """output_attentions (eager): row i of every affected head == 1/n_i on the attended prefix."""
    model = get_model(family, "eager")
    layer, head = 1, 3
    T = prompt_ids.shape[1]
    clean = model(input_ids=prompt_ids, use_cache=False, output_attentions=True).attentions
    if not clean or clean[layer] is None:
        pytest.skip(f"{family} returns no attention weights")
    mask = attended_mask(model, family, layer, T)
    uniform = (mask.double() / mask.double().sum(-1, keepdim=True)).float()
    affected = [head] if target == "q" else _group(family, head)

    # zero: all scores equal, so only the softmax's normalisation rounds (T terms <= 1, one division);
    # ua: q * 1e-5 leaves scores of 1e-5 their size, a model error far above rounding
    for method, eps, atol in (("zero", None, sum_atol(T + 1, 1.0)), ("ua", 1e-5, 1e-3)):
        kw = {"eps": eps} if eps is not None else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GQAGroupWarning)
            with ablate(model, [HeadRef(layer, head)], method=method, target=target, **kw):
                att = model(input_ids=prompt_ids, use_cache=False, output_attentions=True).attentions
        for h in range(N_HEADS):
            if h in affected:
                assert torch.allclose(att[layer][0, h], uniform, atol=atol), (method, h)
                assert not torch.allclose(clean[layer][0, h], uniform, atol=1e-2)  # effect size
            else:
                assert torch.equal(att[layer][0, h], clean[layer][0, h]), (method, h)
        for l in range(layer):
            assert torch.equal(att[l], clean[l])


# ------------------------------------------------------------------------------------------------
# Locality: other heads of the layer and earlier layers are bit-identical

LOCALITY_CASES = [
    ("ua", "q"), ("ua", "k"), ("sc", "out"), ("sc", "v"), ("mean", "q"), ("mean", "v"), ("mean", "out"), ("zero", "out"),
]


@pytest.mark.parametrize("method,target", LOCALITY_CASES, ids=[f"{m}-{t}" for m, t in LOCALITY_CASES])
@pytest.mark.parametrize("family,impl", FAMILY_IMPLS, ids=FAMILY_IMPL_IDS)
def test_ablation_is_local(family, impl, method, target, prompt_ids):
    model = get_model(family, impl)
    layer, head = 1, 1
    with capture(model, family, "out") as clean:
        out_clean = model(input_ids=prompt_ids, use_cache=False, output_hidden_states=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GQAGroupWarning)
        with ablate(model, f"L{layer}H{head}", method=method, target=target) as spec:
            with capture(model, family, "out") as abl:
                out_abl = model(input_ids=prompt_ids, use_cache=False, output_hidden_states=True)
    affected = {h.head for h in spec.affected_heads(model)}
    expected_affected = set(_group(family, head)) if target in ("k", "v") else {head}
    assert affected == expected_affected
    # earlier layers: bit-identical, both the head outputs and the residual stream
    for l in range(layer):
        assert torch.equal(abl[l][0], clean[l][0]), l
    for l in range(layer + 1):
        assert torch.equal(out_abl.hidden_states[l], out_clean.hidden_states[l]), l
    # same layer: untouched heads bit-identical, the ablated ones changed (atol: effect sizes, the
    # alternative being bit-identical)
    for h in range(N_HEADS):
        a, c = abl[layer][0][..., h, :], clean[layer][0][..., h, :]
        if h in affected:
            assert not torch.allclose(a, c, atol=1e-4), h
        else:
            assert torch.equal(a, c), h
    # and the change propagates to the next layer and the logits
    assert not torch.allclose(abl[layer + 1][0], clean[layer + 1][0], atol=1e-5)
    assert not torch.allclose(out_abl.logits, out_clean.logits, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# SC: the head's slice of the o_proj input times eps


@pytest.mark.parametrize("eps", [1e-5, 0.3])
@pytest.mark.parametrize("family,impl", FAMILY_IMPLS, ids=FAMILY_IMPL_IDS)
def test_sc_out_scales_exactly_the_head_slice(family, impl, eps, prompt_ids):
    model = get_model(family, impl)
    layer, head = 2, 2
    with capture(model, family, "out", [layer]) as clean:
        logits(model, prompt_ids)
    with ablate(model, f"L{layer}H{head}", method="sc", eps=eps, target="out"):
        with capture(model, family, "out", [layer]) as abl:
            logits(model, prompt_ids)
    a, c = abl[layer][0], clean[layer][0]
    # one fp32 product on each side: <= 1.5 ulp apart, however eps is rounded
    assert torch.allclose(a[..., head, :], c[..., head, :] * eps, rtol=2 * EPS32, atol=0)
    assert not torch.allclose(a[..., head, :], c[..., head, :])
    others = [h for h in range(N_HEADS) if h != head]
    assert torch.equal(a[..., others, :], c[..., others, :])


@pytest.mark.parametrize("family,impl", FAMILY_IMPLS, ids=FAMILY_IMPL_IDS)
def test_sc_v_scales_the_kv_groups_outputs(family, impl, prompt_ids):
    """Attention is linear in v: scaling a head's values scales its output (the whole KV group's on GQA)."""
    model = get_model(family, impl)
    layer, head, eps = 1, 2, 1e-2
    with capture(model, family, "out", [layer]) as clean, capture(model, family, "v", [layer]) as values:
        logits(model, prompt_ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GQAGroupWarning)
        with ablate(model, f"L{layer}H{head}", method="sc", eps=eps, target="v"):
            with capture(model, family, "out", [layer]) as abl:
                logits(model, prompt_ids)
    a, c = abl[layer][0], clean[layer][0]
    group = _group(family, head)
    # two attention sums over T positions (one of eps * v, one scaled after), each in any order
    atol = 2 * sum_atol(prompt_ids.shape[1] + 2, eps * values[layer][0].abs().max().item())
    for h in range(N_HEADS):
        if h in group:
            assert torch.allclose(a[..., h, :], c[..., h, :] * eps, rtol=0, atol=atol), h
        else:
            assert torch.equal(a[..., h, :], c[..., h, :]), h


# ------------------------------------------------------------------------------------------------
# Mean ablation: the head's value replaced by the mean over the layer's heads


@pytest.mark.parametrize("target", ["q", "k", "v", "out"])
@pytest.mark.parametrize("family,impl", FAMILY_IMPLS, ids=FAMILY_IMPL_IDS)
def test_mean_ablation_replaces_by_mean_over_heads(family, impl, target, prompt_ids):
    """q/k read after the per-head norm in Qwen 3 / Gemma 3, where the attention kernel sees them."""
    model = get_model(family, impl)
    layer, head = 1, 3
    with capture(model, family, target, [layer]) as clean:
        logits(model, prompt_ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GQAGroupWarning)
        with ablate(model, f"L{layer}H{head}", method="mean", target=target):
            with capture(model, family, target, [layer]) as abl:
                logits(model, prompt_ids)
    a, c = abl[layer][0], clean[layer][0]  # [B, T, units, D]
    units = c.shape[2]
    assert units == (kv_heads(model) if target in ("k", "v") else N_HEADS)
    unit = head // (N_HEADS // units)
    expected = c.double().mean(dim=2)
    # an fp32 mean of `units` values (and one division), in any order
    assert torch.allclose(a[:, :, unit].double(), expected, rtol=0, atol=sum_atol(units + 1, c.abs().max().item()))
    assert not torch.allclose(c[:, :, unit].double(), expected, atol=1e-3)  # effect size
    others = [u for u in range(units) if u != unit]
    assert torch.equal(a[:, :, others], c[:, :, others])


# ------------------------------------------------------------------------------------------------
# Kernel independence and composition

EAGER_SDPA_CASES = [("ua", "q"), ("ua", "k"), ("sc", "out"), ("sc", "v"), ("mean", "q"), ("zero", "q")]


@pytest.mark.parametrize("method,target", EAGER_SDPA_CASES, ids=[f"{m}-{t}" for m, t in EAGER_SDPA_CASES])
@pytest.mark.parametrize("family", SDPA_FAMILIES)
def test_eager_equals_sdpa_under_ablation(family, method, target, prompt_ids):
    eager, sdpa = get_model(family, "eager"), get_model(family, "sdpa")
    clean_e = logits(eager, prompt_ids)
    # same weights; the kernels sum in other orders
    assert torch.allclose(clean_e, logits(sdpa, prompt_ids), rtol=0, atol=forward_atol(eager, clean_e))
    heads = "L0H1,L2H2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GQAGroupWarning)
        with ablate(eager, heads, method=method, target=target):
            le = logits(eager, prompt_ids)
        with ablate(sdpa, heads, method=method, target=target):
            ls = logits(sdpa, prompt_ids)
    assert not torch.allclose(le, clean_e, atol=1e-4)  # effect size
    assert torch.allclose(le, ls, rtol=0, atol=forward_atol(eager, le)), (le - ls).abs().max()


GROUP_CASES = [
    ("ua", "q", 1e-5, "L0H1,L2H3"),
    ("ua", "q", 1e-5, "L1H0,L1H3"),
    ("sc", "out", 1e-3, "L0H1,L2H3"),
    ("sc", "out", 1e-3, "L1H0,L1H3"),
    ("ua", "k", 1e-5, "L0H1,L2H3"),
    # mean ablation of two heads of one layer is not a composition of two single ablations (the
    # second mean would include the first replaced head), so only across layers here
    ("mean", "q", 1e-5, "L0H1,L2H3"),
]


@pytest.mark.parametrize("method,target,eps,heads", GROUP_CASES, ids=["-".join(map(str, c)) for c in GROUP_CASES])
@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.filterwarnings("ignore::safetyheads.ablation.GQAGroupWarning")
def test_group_equals_nested_contexts(family, method, target, eps, heads, prompt_ids):
    model = get_model(family, "eager")
    first, second = heads.split(",")
    with ablate(model, heads, method=method, eps=eps, target=target) as spec:
        group = logits(model, prompt_ids)
    assert spec.heads == (HeadRef.parse(first), HeadRef.parse(second))
    with ablate(model, first, method=method, eps=eps, target=target):
        single = logits(model, prompt_ids)
        with ablate(model, second, method=method, eps=eps, target=target):
            nested = logits(model, prompt_ids)
    assert torch.allclose(group, nested, rtol=0, atol=forward_atol(model, group)), (group - nested).abs().max()
    assert not torch.allclose(group, single, atol=1e-4)  # effect size: the second head did something
    assert torch.equal(logits(model, prompt_ids), logits(model, prompt_ids))


@pytest.mark.parametrize("family,impl", FAMILY_IMPLS, ids=FAMILY_IMPL_IDS)
def test_mean_group_in_one_layer_uses_the_original_heads(family, impl, prompt_ids):
    """Two heads of one layer mean-ablated together: both become the mean of the *clean* heads."""
    model = get_model(family, impl)
    layer = 1
    with capture(model, family, "q", [layer]) as clean:
        logits(model, prompt_ids)
    with ablate(model, "L1H0,L1H3", method="mean", target="q"):
        with capture(model, family, "q", [layer]) as abl:
            logits(model, prompt_ids)
    a, c = abl[layer][0], clean[layer][0]
    expected = c.double().mean(dim=2)
    atol = sum_atol(N_HEADS + 1, c.abs().max().item())  # an fp32 mean of N_HEADS values, in any order
    for h in (0, 3):
        assert torch.allclose(a[:, :, h].double(), expected, rtol=0, atol=atol), h
    assert torch.equal(a[:, :, [1, 2]], c[:, :, [1, 2]])


# ------------------------------------------------------------------------------------------------
# Hooks are removed on exit, errors included


@pytest.mark.parametrize("method,target", [("ua", "q"), ("sc", "out"), ("mean", "k"), ("zero", "v")])
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_hooks_removed_on_exit_and_on_error(family, method, target, prompt_ids):
    model = get_model(family, "eager")
    before = hook_count(model)
    clean = logits(model, prompt_ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GQAGroupWarning)
        with ablate(model, "L0H0,L2H3", method=method, target=target):
            assert hook_count(model) > before
            inside = logits(model, prompt_ids)
        assert hook_count(model) == before
        assert torch.equal(logits(model, prompt_ids), clean)
        assert not torch.allclose(inside, clean, atol=1e-5)  # effect size

        class Boom(RuntimeError):
            pass

        with pytest.raises(Boom):
            with ablate(model, "L0H0,L2H3", method=method, target=target):
                assert hook_count(model) > before
                raise Boom("body failed")
        assert hook_count(model) == before
        assert torch.equal(logits(model, prompt_ids), clean)

    # a spec that fails validation installs nothing
    with pytest.raises(HeadError):
        with ablate(model, "L0H0,L9H0", method=method, target=target):
            pass
    assert hook_count(model) == before


# ------------------------------------------------------------------------------------------------
# Generation with the KV cache sees the ablation at every step

GEN_CASES = [("ua", "q"), ("sc", "out"), ("ua", "k"), ("mean", "q")]


@pytest.mark.parametrize("method,target", GEN_CASES, ids=[f"{m}-{t}" for m, t in GEN_CASES])
@pytest.mark.parametrize("family,impl", FAMILY_IMPLS, ids=FAMILY_IMPL_IDS)
def test_generate_cached_equals_uncached_under_ablation(family, impl, method, target, tok):
    model = get_model(family, impl)
    ids = tok("## Query:Tell me a story.\n## Answer:", return_tensors="pt").input_ids
    T = ids.shape[1]
    gen_kw = dict(
        attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=8, min_new_tokens=8,
        pad_token_id=tok.pad_token_id,
    )
    heads = "L0H2,L1H1,L2H0"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GQAGroupWarning)
        with ablate(model, heads, method=method, target=target):
            cached = model.generate(ids, use_cache=True, **gen_kw)
            uncached = model.generate(ids, use_cache=False, **gen_kw)
            # teacher-forced check, independent of generate(): every new token is the argmax of
            # the ablated model's full-sequence logits at the previous position
            full = logits(model, cached)
        clean_full = logits(model, cached)
    assert cached.shape == (1, T + 8)
    assert torch.equal(cached, uncached), (cached, uncached)
    assert torch.equal(cached[0, T:], full[0, T - 1 : -1].argmax(-1))
    assert not torch.allclose(full, clean_full, atol=1e-4)  # effect size: the ablation is active during generation
    assert hook_count(model) == 0


# ------------------------------------------------------------------------------------------------
# GQA group warning and affected heads


@pytest.mark.parametrize("target", ["k", "v"])
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_gqa_kv_target_warns_and_lists_group(family, target):
    model = get_model(family, "eager")
    spec = AblationSpec("L1H3", "mean" if target == "v" else "ua", 1e-5, target)
    q_spec = AblationSpec("L1H3", "ua", 1e-5, "q")
    assert q_spec.affected_heads(model) == (HeadRef(1, 3),)
    if family in GQA_FAMILIES:
        assert spec.affected_heads(model) == (HeadRef(1, 2), HeadRef(1, 3))
        with pytest.warns(GQAGroupWarning) as rec:
            with ablate(model, spec):
                pass
        msg = str(rec[0].message)
        assert "L1H2" in msg and "L1H3" in msg
    else:
        assert spec.affected_heads(model) == (HeadRef(1, 3),)
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            with ablate(model, spec):
                pass
        assert not [w for w in rec if issubclass(w.category, GQAGroupWarning)]
    # q/out targets never warn
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with ablate(model, q_spec):
            pass
        with ablate(model, "L1H3", method="sc", target="out"):
            pass
    assert not [w for w in rec if issubclass(w.category, GQAGroupWarning)]


def test_gqa_affected_heads_multiple_groups():
    model = get_model("llama-gqa", "eager")
    spec = AblationSpec("L2H0,L0H3,L2H1", "ua", 1e-5, "k")
    assert spec.affected_heads(model) == (HeadRef(0, 2), HeadRef(0, 3), HeadRef(2, 0), HeadRef(2, 1))


def test_gqa_warning_points_at_the_caller():
    """Regression: the warning must name the user's ``with`` line, not contextlib.py. Under Python's
    default filter (once per location) every GQA warning would otherwise share one location and
    the user would see only the first one.
    """
    model = get_model("llama-gqa", "eager")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with ablate(model, "L1H1", target="k"):
            pass
    (w,) = [w for w in rec if issubclass(w.category, GQAGroupWarning)]
    assert w.filename == __file__, w.filename


# ------------------------------------------------------------------------------------------------
# Bad input: one-line errors of the library's own classes

BAD_SPECS = [
    (dict(method="bogus"), AblationError),
    (dict(method="UA"), AblationError),
    (dict(method="ua", target="out"), AblationError),
    (dict(method="ua", target="v"), AblationError),
    (dict(method="sc", target="q"), AblationError),
    (dict(method="mean", target="z"), AblationError),
    (dict(method="ua", eps=0.0), AblationError),
    (dict(method="ua", eps=-1e-5), AblationError),
    (dict(method="ua", eps=float("nan")), AblationError),
    (dict(method="ua", eps=float("inf")), AblationError),
    (dict(method="sc", eps=0), AblationError),
    (dict(method="sc", eps=-0.5), AblationError),
    (dict(method="sc", eps=float("nan")), AblationError),
    (dict(method="sc", eps="abc"), AblationError),
    (dict(method="ua", eps=None), AblationError),
    (dict(heads="L3H0"), HeadError),
    (dict(heads="L0H4"), HeadError),
    (dict(heads="L0H0,L99H99"), HeadError),
    (dict(heads="nonsense"), HeadError),
    (dict(heads=""), HeadError),
]


@pytest.mark.parametrize("kwargs,exc", BAD_SPECS, ids=[str(k) for k, _ in BAD_SPECS])
def test_bad_ablation_input_raises_one_line_error(kwargs, exc):
    model = get_model("llama-gqa", "eager")
    kwargs = dict(kwargs)
    heads = kwargs.pop("heads", "L1H1")
    before = hook_count(model)
    with pytest.raises(exc) as info:
        with ablate(model, heads, **kwargs):
            pytest.fail("the with-body must not run")
    assert isinstance(info.value, SafetyheadsError)
    msg = str(info.value)
    assert msg.strip() and "\n" not in msg, msg
    assert hook_count(model) == before
    if heads in ("L3H0", "L0H4", "L0H0,L99H99"):  # out of range: the message gives the valid ranges
        assert "0..2" in msg and "0..3" in msg, msg


def test_mean_ignores_eps_and_zero_sets_eps_to_zero():
    assert AblationSpec("L0H0", "mean", eps=0).method == "mean"
    assert AblationSpec("L0H0", "zero", eps=1e-5).eps == 0.0
    # defaults: the paper's pairing of method and target
    assert AblationSpec("L0H0", "ua").target == "q"
    assert AblationSpec("L0H0", "sc").target == "out"


# ------------------------------------------------------------------------------------------------
# Serialisation

ROUNDTRIP_SPECS = [
    AblationSpec("L2H26", "ua", 1e-5, "q"),
    AblationSpec("L2H26,L3H8", "ua", 1e-10, "k"),
    AblationSpec("0-1,1.2", "sc", 0.25, "v"),
    AblationSpec("L5H5", "sc"),
    AblationSpec("L0H0,L1H1,L0H0", "mean", 1e-5, "out"),
    AblationSpec("L4H2", "zero", 1.0, "q"),
]


@pytest.mark.parametrize("spec", ROUNDTRIP_SPECS, ids=[s.to_json() for s in ROUNDTRIP_SPECS])
def test_spec_roundtrip(spec):
    d = spec.to_dict()
    assert all(isinstance(h, str) for h in d["heads"])
    assert d["heads"] == [str(h) for h in spec.heads]
    assert d["target"] == spec.target and d["method"] == spec.method
    back = AblationSpec.from_dict(d)
    assert back == spec
    assert hash(back) == hash(spec)
    again = AblationSpec.from_dict(json.loads(spec.to_json()))
    assert again == spec
    assert again.to_dict() == d
    assert math.isfinite(back.eps)
