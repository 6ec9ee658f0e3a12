"""Weight surgery: exported checkpoints load with plain transformers and equal the hooked model."""

import json
import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM

from safetyheads import ablate, export_ablated
from safetyheads.ablation import AblationSpec
from safetyheads.errors import AblationError
from safetyheads.surgery import MANIFEST, ablated_tensors, changed_parameter_count
from safetyheads.testing import TINY_FAMILIES, tiny_model

from tolerances import forward_atol

HEADS = "L1H1,L1H2,L2H0"
CASES = [("ua", "q"), ("sc", "out"), ("mean", "q"), ("mean", "out"), ("ua", "k"), ("sc", "v"), ("zero", "q")]
QK_NORM = {"qwen3", "gemma3"}


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 256, (2, 11), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("method,target", CASES)
def test_export_equals_hooks(tmp_path, ids, family, method, target):
    warnings.simplefilter("ignore")
    model = tiny_model(family)
    if family in QK_NORM and target in ("q", "k") and method in ("ua", "mean"):
        with pytest.raises(AblationError, match="cannot be written into the weights"):
            export_ablated(model, HEADS, method, 1e-3, tmp_path, target=target)
        return
    export_ablated(model, HEADS, method, 1e-3, tmp_path, target=target)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    with torch.no_grad():
        with ablate(model, HEADS, method, 1e-3, target):
            hooked = model(ids).logits
        clean = model(ids).logits
        exported = plain(ids).logits
    assert (hooked - exported).abs().max() <= forward_atol(model, hooked)  # edited weights round otherwise
    assert (clean - exported).abs().max() > 1e-3  # effect size: the ablation did something
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["ablation"]["heads"] == ["L1H1", "L1H2", "L2H0"]
    assert manifest["ablation"]["method"] == method and manifest["ablation"]["target"] == target
    assert manifest["parameters_modified"] > 0


def test_qwen2_bias_is_scaled(tmp_path):
    model = tiny_model("qwen2")
    bias = model.model.layers[1].self_attn.q_proj.bias.detach().clone()
    assert bias.abs().min() > 0  # the tiny model's biases are non-zero, so this test can fail
    new = ablated_tensors(model, AblationSpec("L1H1", "ua", 1e-3))
    hd = 16
    b = new["model.layers.1.self_attn.q_proj.bias"]
    torch.testing.assert_close(b[hd:2 * hd], bias[hd:2 * hd] * 1e-3)
    torch.testing.assert_close(b[:hd], bias[:hd])


def test_no_compounding_and_source_untouched(tmp_path):
    model = tiny_model("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_ablated(model, "L0H1", "ua", 1e-2, tmp_path / "a")
    export_ablated(model, "L0H1", "ua", 1e-2, tmp_path / "b")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "a").state_dict()["model.layers.0.self_attn.q_proj.weight"]
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "b").state_dict()["model.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(a, b)
    torch.testing.assert_close(a[16:32], before["model.layers.0.self_attn.q_proj.weight"][16:32] * 1e-2)


def test_parameters_modified_is_one_head_slice():
    model = tiny_model("llama")  # hidden 64, head_dim 16: one head's W_q rows = 16 * 64 values
    assert changed_parameter_count(model, AblationSpec("L0H1", "ua", 1e-3)) == 16 * 64


def test_gqa_kv_export_manifest_names_group(tmp_path):
    model = tiny_model("llama-gqa")
    with pytest.warns(UserWarning, match="KV group"):
        export_ablated(model, "L0H1", "ua", 1e-3, tmp_path, target="k")
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["affected_query_heads"] == ["L0H0", "L0H1"]
    assert "KV group" in manifest["kv_group_note"]
