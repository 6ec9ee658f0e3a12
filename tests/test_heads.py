"""Head names (HeadRef / parse_heads / all_heads) and the architecture table's refusal path."""

from __future__ import annotations

import pytest
import torch

from safetyheads.arch import ARCHITECTURES, get_arch, geometry
from safetyheads.errors import HeadError, SafetyheadsError, UnsupportedArchitectureError
from safetyheads.heads import HeadRef, all_heads, parse_heads, validate_heads
from safetyheads.testing import TINY_FAMILIES

from conftest import N_HEADS, N_LAYERS, get_model


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg.strip(), "error message is empty"
    assert "\n" not in msg, f"error message is not one line: {msg!r}"
    return msg


# ------------------------------------------------------------------------------------------------
# Parsing


@pytest.mark.parametrize("text", ["L2H26", "2-26", "2.26", "l2h26", "L2h26", "  L2H26 "])
def test_parse_paper_spellings(text):
    ref = HeadRef.parse(text)
    assert ref == HeadRef(2, 26)
    assert (ref.layer, ref.head) == (2, 26)
    assert str(ref) == "L2H26"


def test_parse_is_zero_indexed_and_multidigit():
    assert HeadRef.parse("L0H0") == HeadRef(0, 0)
    assert HeadRef.parse("31-127") == HeadRef(31, 127)
    assert str(HeadRef.parse("10.3")) == "L10H3"


def test_parse_passthrough_of_refs_and_tuples():
    ref = HeadRef(3, 8)
    assert HeadRef.parse(ref) is ref
    assert HeadRef.parse((3, 8)) == ref


def test_str_parse_roundtrip():
    for layer in (0, 1, 12):
        for head in (0, 7, 31):
            ref = HeadRef(layer, head)
            assert HeadRef.parse(str(ref)) == ref


@pytest.mark.parametrize(
    "text", ["x", "L2", "2-", "-1-3", "", "L2H", "H26", "2-26-1", "L-1H3", "2,26", "L2 H26", "2.5.1", "1e2-3"]
)
def test_parse_garbage_raises_head_error(text):
    with pytest.raises(HeadError) as info:
        HeadRef.parse(text)
    assert isinstance(info.value, SafetyheadsError)
    _one_line(info.value)


@pytest.mark.parametrize("bad", [None, 3, 2.5, ["L1H1"]])
def test_parse_non_string_raises_head_error(bad):
    with pytest.raises(HeadError) as info:
        HeadRef.parse(bad)
    _one_line(info.value)


@pytest.mark.parametrize("layer,head", [(-1, 0), (0, -3)])
def test_negative_indices_rejected(layer, head):
    with pytest.raises(HeadError) as info:
        HeadRef(layer, head)
    _one_line(info.value)


def test_ordering_is_layer_major():
    refs = [HeadRef(2, 0), HeadRef(0, 3), HeadRef(1, 1), HeadRef(0, 1)]
    assert sorted(refs) == [HeadRef(0, 1), HeadRef(0, 3), HeadRef(1, 1), HeadRef(2, 0)]


# ------------------------------------------------------------------------------------------------
# Validation against a model's geometry


def test_validate_in_range_returns_self():
    ref = HeadRef(2, 3)
    assert ref.validate(3, 4) is ref


@pytest.mark.parametrize("ref", [HeadRef(3, 0), HeadRef(0, 4), HeadRef(7, 9)])
def test_validate_out_of_range_names_valid_ranges(ref):
    with pytest.raises(HeadError) as info:
        ref.validate(3, 4)
    msg = _one_line(info.value)
    assert str(ref) in msg
    assert "0..2" in msg, msg  # the valid layers
    assert "0..3" in msg, msg  # the valid heads


def test_validate_heads_against_model():
    model = get_model("llama")
    assert validate_heads(model, "L2H3,L0H0") == (HeadRef(2, 3), HeadRef(0, 0))
    with pytest.raises(HeadError) as info:
        validate_heads(model, "L0H0,L3H0")
    assert "0..2" in _one_line(info.value)


# ------------------------------------------------------------------------------------------------
# parse_heads


def test_parse_heads_keeps_order_and_dedups():
    assert parse_heads("L1H2,L0H3") == (HeadRef(1, 2), HeadRef(0, 3))
    assert parse_heads("L1H2, L0H3 ,1-2,1.2,l1h2") == (HeadRef(1, 2), HeadRef(0, 3))
    assert parse_heads(["2-26", "L3H8", HeadRef(2, 26), (3, 8)]) == (HeadRef(2, 26), HeadRef(3, 8))
    assert parse_heads(HeadRef(4, 5)) == (HeadRef(4, 5),)
    assert parse_heads("L0H1,") == (HeadRef(0, 1),)


@pytest.mark.parametrize("spec", ["", ",", " , ", []])
def test_parse_heads_empty_raises(spec):
    with pytest.raises(HeadError) as info:
        parse_heads(spec)
    _one_line(info.value)


def test_parse_heads_garbage_item_raises():
    with pytest.raises(HeadError) as info:
        parse_heads("L1H2,banana")
    assert "banana" in _one_line(info.value)


# ------------------------------------------------------------------------------------------------
# all_heads / geometry over every tiny family


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_all_heads_count_and_order(family):
    model = get_model(family)
    heads = all_heads(model)
    assert len(heads) == N_LAYERS * N_HEADS
    assert len(set(heads)) == len(heads)
    assert list(heads) == sorted(heads)
    assert heads[0] == HeadRef(0, 0) and heads[-1] == HeadRef(N_LAYERS - 1, N_HEADS - 1)
    g = geometry(model)
    assert (g.n_layers, g.n_heads) == (N_LAYERS, N_HEADS)
    expected_kv = 4 if family in ("llama", "gpt2") else 2
    assert g.n_kv_heads == expected_kv
    assert g.is_gqa == (expected_kv != N_HEADS)
    assert g.group_size == N_HEADS // expected_kv
    assert [g.kv_head_of(h) for h in range(N_HEADS)] == [h // (N_HEADS // expected_kv) for h in range(N_HEADS)]
    # the head dim the library uses is the one the attention module really uses
    attn_hd = 16 if family in ("qwen3", "gemma2", "gemma3") else 64 // N_HEADS
    assert g.head_dim == attn_hd


# ------------------------------------------------------------------------------------------------
# Unsupported architectures


def _tiny_unsupported(kind: str):
    import transformers as tf

    if kind == "bert":
        cfg = tf.BertConfig(
            vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
            is_decoder=True,
        )
    else:
        cfg = tf.OPTConfig(
            vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, ffn_dim=37,
            word_embed_proj_dim=32, max_position_embeddings=64,
        )
    torch.manual_seed(0)
    return tf.AutoModelForCausalLM.from_config(cfg).eval()


@pytest.mark.parametrize("kind", ["bert", "opt"])
def test_unsupported_architecture_names_supported_families(kind):
    model = _tiny_unsupported(kind)
    for call in (get_arch, geometry, all_heads):
        with pytest.raises(UnsupportedArchitectureError) as info:
            call(model)
        assert isinstance(info.value, SafetyheadsError)
        msg = _one_line(info.value)
        assert kind in msg
        for spec in ARCHITECTURES:
            assert spec.family in msg, f"{spec.family!r} missing from {msg!r}"


def test_unsupported_architecture_refused_by_ablate():
    from safetyheads.ablation import ablate

    model = _tiny_unsupported("opt")
    with pytest.raises(UnsupportedArchitectureError):
        with ablate(model, "L0H0"):
            pass
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0
