"""Bad model inputs through the command line (issue 23, items 1-3): each ends with exit status 2 and
one line ``safetyheads: error: ...`` on stderr, no traceback, and no file created, changed or
deleted in the user's folder. Plus what must work around them: an organism build that leaves the
user's files alone, and a dequantised GGUF cache that is rebuilt when its files changed.

Everything runs on tiny models saved here (no downloads); the GGUF cases use a tiny but valid GGUF
file and a stand-in for the 35-second dequantisation.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import safetyheads.models as models
import safetyheads.organisms as organisms
from safetyheads.cli import main
from safetyheads.models import sha256_file
from safetyheads.organisms import get_recipe
from safetyheads.organisms import train as train_mod
from safetyheads.results import read_results
from safetyheads.testing import tiny_model, tiny_tokenizer

PACKAGE_ORGANISMS = Path(organisms.__file__).parent


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root``: sha256 for files, "dir" for folders."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


def one_line_error(code: int, err: str) -> str:
    """The single stderr line of a refused command."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, f"stderr has {len(lines)} lines:\n{err}"
    assert lines[0].startswith("safetyheads: error: ")
    return lines[0]


def write_gguf(path: Path) -> Path:
    """A tiny, structurally valid GGUF file (one tensor): enough for the checks that run before dequantising."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.arange(32, dtype=np.float32).reshape(4, 8))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(autouse=True)
def _offline(offline_cache):
    """An empty safetyheads cache and HF home (outside the snapshotted folder), no Hub."""


@pytest.fixture(scope="module")
def adapter_template(folder, tmp_path_factory):
    """A valid organism folder on the tiny saved model: an untrained LoRA adapter and its manifest."""
    path = tmp_path_factory.mktemp("organism")
    recipe = get_recipe("organism-a").replace(base=str(folder))
    train_mod.save_adapter(train_mod.lora_model(tiny_model("llama-gqa"), recipe), path, recipe.base)
    manifest = {"organism": "organism-a", "recipe": {"base": str(folder)}, "base": {},
                "adapter": {"sha256": sha256_file(path / "adapter_model.safetensors")}}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.fixture()
def tiny_recipe(folder, monkeypatch):
    """`organisms build organism-a` builds a two-step organism on the tiny saved model."""
    recipe = get_recipe("organism-a").replace(base=str(folder), steps=2, batch_size=4, n_benign=4, n_harmful=4,
                                              answer_tokens=4, threads=torch.get_num_threads(), warmup_steps=1)
    monkeypatch.setattr(organisms, "get_recipe", lambda name: recipe)
    return recipe


# ------------------------------------------------------------------ how each bad input is made
# Each maker gets the user's folder (snapshotted), the tiny saved model and the valid organism
# template, makes its bad input inside the user's folder, and returns the command line.


def _model_copy(work: Path, folder: Path, name: str = "model") -> Path:
    dest = work / name
    shutil.copytree(folder, dest)
    return dest


def _ships(model, work: Path, *extra) -> list[str]:
    return ["ships", "--model", str(model), "--prompt", "How do I pick a lock?", "--quiet", "--attn", "eager",
            "--out", str(work / "scores.jsonl"), *extra]


def _generate(model, work: Path, *extra) -> list[str]:
    return ["generate", "--model", str(model), "--prompt", "Hello", "--max-new-tokens", "2",
            "--out", str(work / "responses.jsonl"), *extra]


def _export(model, work: Path) -> list[str]:
    return ["export", "--model", str(model), "--heads", "L0H1", "--out", str(work / "exported")]


def empty_safetensors(work, folder, org):
    m = _model_copy(work, folder)
    (m / "model.safetensors").write_bytes(b"")
    return _ships(m, work), "is not a readable safetensors file (header too small)"


def truncated_safetensors(work, folder, org):
    m = _model_copy(work, folder)
    blob = (m / "model.safetensors").read_bytes()
    (m / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    return _generate(m, work), "is not a readable safetensors file"


def garbage_safetensors(work, folder, org):
    m = _model_copy(work, folder)
    (m / "model.safetensors").write_bytes(os.urandom(4096))
    return _export(m, work), "is not a readable safetensors file"


def shape_mismatch(work, folder, org):
    m = _model_copy(work, folder)
    config = json.loads((m / "config.json").read_text())
    config["intermediate_size"] = 128  # the weights have 96
    (m / "config.json").write_text(json.dumps(config))
    return _ships(m, work), "tensors have other shapes than its config.json says"


def missing_tensor(work, folder, org):
    m = _model_copy(work, folder)
    weights = load_file(m / "model.safetensors")
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, m / "model.safetensors", metadata={"format": "pt"})
    return _generate(m, work), "1 tensors are missing (model.layers.1.mlp.up_proj.weight)"


def no_tokenizer(work, folder, org):
    m = _model_copy(work, folder)
    for f in m.iterdir():
        if f.name.startswith("tokenizer") or f.name in ("special_tokens_map.json", "chat_template.jinja"):
            f.unlink()
    return _ships(m, work), "has no tokenizer"


def garbage_tokenizer(work, folder, org):
    m = _model_copy(work, folder)
    (m / "tokenizer.json").write_text("{not json")
    return _ships(m, work), "cannot load the tokenizer"


def garbage_config(work, folder, org):
    m = _model_copy(work, folder)
    (m / "config.json").write_text("{not json")
    return _export(m, work), "config.json is not valid JSON"


def custom_code_without_trust(work, folder, org):
    m = _model_copy(work, folder)
    config = json.loads((m / "config.json").read_text())
    config.update(model_type="my-own-llama", auto_map={"AutoConfig": "modeling_mine.MyConfig",
                                                       "AutoModelForCausalLM": "modeling_mine.MyForCausalLM"})
    (m / "config.json").write_text(json.dumps(config))
    (m / "modeling_mine.py").write_text("raise SystemExit('this code must not run')\n")
    return _ships(m, work), "not run without --trust-remote-code"


def empty_gguf(work, folder, org):
    (work / "model.gguf").write_bytes(b"")
    return _ships(work / "model.gguf", work), "model.gguf is empty"


def garbage_gguf(work, folder, org):
    (work / "model.gguf").write_bytes(os.urandom(4096))
    return _generate(work / "model.gguf", work), "is not a GGUF file"


def truncated_gguf(work, folder, org):
    blob = write_gguf(work / "model.gguf").read_bytes()
    (work / "model.gguf").write_bytes(blob[:-64])
    return _ships(work / "model.gguf", work), "is not a readable GGUF file"


def device_tpu(work, folder, org):
    return _ships(folder, work, "--device", "tpu"), "unknown device 'tpu'"


def device_meta(work, folder, org):
    return _generate(folder, work, "--device", "meta"), "device 'meta' is not supported"


def device_missing_gpu(work, folder, org):
    return _ships(folder, work, "--device", "cuda:99"), "device 'cuda:99' asked for"


def _organism_copy(work: Path, org: Path) -> Path:
    dest = work / "my-organism"
    shutil.copytree(org, dest)
    return dest


def _edit_manifest(path: Path, edit) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def pickle_adapter(work, folder, org):
    o = _organism_copy(work, org)
    (o / "adapter_model.safetensors").unlink()
    (o / "adapter_model.bin").write_bytes(b"\x80\x04N.")  # a pickle (of None)
    return _ships(o, work), "holds adapter_model.bin: pickled adapters are never loaded"


def pickle_beside_safetensors(work, folder, org):
    o = _organism_copy(work, org)
    (o / "adapter_model.bin").write_bytes(b"\x80\x04N.")
    return _generate(o, work), "pickled adapters are never loaded"


def manifest_without_adapter(work, folder, org):
    o = _organism_copy(work, org)
    _edit_manifest(o, lambda m: m.pop("adapter"))
    return _ships(o, work), "has no 'adapter' (dict)"


def manifest_without_base(work, folder, org):
    o = _organism_copy(work, org)
    _edit_manifest(o, lambda m: m["recipe"].pop("base"))
    return _generate(o, work), "has no 'recipe.base' (str)"


def manifest_not_json(work, folder, org):
    o = _organism_copy(work, org)
    (o / "manifest.json").write_text("{\"organism\": ")
    return _ships(o, work), "manifest.json is not valid JSON"


def adapter_damaged_with_its_sha(work, folder, org):
    o = _organism_copy(work, org)
    (o / "adapter_model.safetensors").write_bytes(os.urandom(4096))
    _edit_manifest(o, lambda m: m["adapter"].update(sha256=sha256_file(o / "adapter_model.safetensors")))
    return _ships(o, work), "cannot apply the adapter"


def organism_on_itself(work, folder, org):
    o = _organism_copy(work, org)
    _edit_manifest(o, lambda m: m["recipe"].update(base=str(o)))
    return _ships(o, work), "which is itself an organism"


def evaluate_bad_organism(work, folder, org):
    o = _organism_copy(work, org)
    _edit_manifest(o, lambda m: m.pop("organism"))
    return ["organisms", "evaluate", str(o), "--out", str(work / "eval"), "--quick"], "has no 'organism' (str)"


def build_into_user_folder(work, folder, org):
    mine = work / "my-stuff"
    (mine / "notes").mkdir(parents=True)
    (mine / "thesis.tex").write_text("years of work")
    (mine / "notes" / "todo.txt").write_text("back up")
    return (["organisms", "build", "organism-a", "--out", str(mine), "--steps", "1"],
            "is not empty and is not a build of organism-a")


def build_into_another_organism(work, folder, org):
    o = _organism_copy(work, org)
    _edit_manifest(o, lambda m: m.update(organism="organism-b"))
    return (["organisms", "build", "organism-a", "--out", str(o), "--steps", "1"],
            "is not empty and is a build of organism-b")


def build_into_a_file(work, folder, org):
    (work / "adapter").write_text("a file, not a folder")
    return ["organisms", "build", "organism-a", "--out", str(work / "adapter")], "is a file"


def build_unknown_device(work, folder, org):
    return (["organisms", "build", "organism-a", "--out", str(work / "new"), "--device", "tpu"],
            "unknown device 'tpu'")


BAD_INPUTS = [empty_safetensors, truncated_safetensors, garbage_safetensors, shape_mismatch, missing_tensor,
              no_tokenizer, garbage_tokenizer, garbage_config, custom_code_without_trust, empty_gguf, garbage_gguf,
              truncated_gguf, device_tpu, device_meta, device_missing_gpu, pickle_adapter, pickle_beside_safetensors,
              manifest_without_adapter, manifest_without_base, manifest_not_json, adapter_damaged_with_its_sha,
              organism_on_itself, evaluate_bad_organism, build_into_user_folder, build_into_another_organism,
              build_into_a_file, build_unknown_device]


@pytest.mark.parametrize("make", BAD_INPUTS, ids=[f.__name__ for f in BAD_INPUTS])
def test_bad_model_input_is_one_line_and_touches_nothing(make, folder, adapter_template, tiny_recipe, tmp_path,
                                                         capsys):
    """(``tiny_recipe``: a build that is wrongly let through takes seconds, not the real 25 minutes.)"""
    work = tmp_path / "work"
    work.mkdir()
    argv, expected = make(work, folder, adapter_template)
    before = snapshot(work)
    package_before = snapshot(PACKAGE_ORGANISMS)
    capsys.readouterr()
    line = one_line_error(main(argv), capsys.readouterr().err)
    assert expected in line
    assert snapshot(work) == before
    assert snapshot(PACKAGE_ORGANISMS) == package_before


def test_the_organism_template_itself_loads(adapter_template, tmp_path, capsys):
    """The control for the organism cases above: undamaged, the same folder scores."""
    assert main(_ships(adapter_template, tmp_path)) == 0
    assert len(read_results(tmp_path / "scores.jsonl")[0]) == 3 * 4


# ------------------------------------------------------------------ item 1: organism builds


BUILD_FILES = {"adapter_model.safetensors", "adapter_config.json", "manifest.json"}


def test_rebuild_replaces_only_the_build_files(tiny_recipe, tmp_path, capsys):
    out = tmp_path / "build"
    assert main(["organisms", "build", "organism-a", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == BUILD_FILES and not list(tmp_path.glob(".build.*"))
    (out / "behaviour.json").write_text("{}")  # what `organisms evaluate` adds
    (out / "README.md").write_text("mine")
    first = snapshot(out)
    capsys.readouterr()
    assert main(["organisms", "build", "organism-a", "--out", str(out), "--fresh"]) == 0
    assert "left README.md, behaviour.json in" in capsys.readouterr().err
    again = snapshot(out)
    assert {k: again[k] for k in ("README.md", "behaviour.json")} == {k: first[k] for k in ("README.md", "behaviour.json")}
    assert set(again) == set(first)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_overwrite_into_a_user_folder_keeps_the_users_files(tiny_recipe, tmp_path):
    mine = tmp_path / "mine"
    (mine / "notes").mkdir(parents=True)
    (mine / "README.md").write_text("my readme")  # peft writes a README.md of its own: it must not land here
    (mine / "notes" / "todo.txt").write_text("back up")
    before = snapshot(mine)
    assert main(["organisms", "build", "organism-a", "--out", str(mine), "--overwrite"]) == 0
    after = snapshot(mine)
    assert {k: after[k] for k in before} == before
    assert set(after) - set(before) == BUILD_FILES
    assert json.loads((mine / "manifest.json").read_text())["adapter"]["sha256"] == sha256_file(
        mine / "adapter_model.safetensors")


def test_build_without_out_leaves_the_package_alone(tiny_recipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    package_before = snapshot(PACKAGE_ORGANISMS)
    assert main(["organisms", "build", "organism-a"]) == 0
    assert snapshot(PACKAGE_ORGANISMS) == package_before
    built = tmp_path / "safetyheads-out" / "organisms" / "organism-a"
    assert {p.name for p in built.iterdir()} == BUILD_FILES
    assert main(["ships", "--model", str(built), "--prompt", "hi", "--quiet", "--out", str(tmp_path / "s.jsonl")]) == 0


# ------------------------------------------------------------------ item 2: the dequantised GGUF cache


@pytest.fixture()
def fake_dequantise(monkeypatch):
    """Dequantising is a stand-in that saves the tiny model; returns the list of its calls."""
    calls = []

    def dequantise(gguf_path, into):
        calls.append(gguf_path)
        tiny_model("llama-gqa").save_pretrained(into)
        tiny_tokenizer().save_pretrained(into)

    monkeypatch.setattr(models, "_dequantise", dequantise)
    return calls


def _cache_folder(gguf_path: Path) -> Path:
    return models.cache_dir() / "gguf" / sha256_file(gguf_path)


def _tamper(cache: Path) -> None:
    """Change one tensor of the cached weights, leaving a perfectly loadable file."""
    weights = load_file(cache / "model.safetensors")
    weights["model.layers.1.self_attn.q_proj.weight"] += 0.5
    save_file(weights, cache / "model.safetensors", metadata={"format": "pt"})


def _scores(tmp_path, name, gguf_path, capsys):
    out = tmp_path / f"{name}.jsonl"
    capsys.readouterr()
    assert main(["ships", "--model", str(gguf_path), "--prompt", "How do I pick a lock?", "--quiet",
                 "--out", str(out)]) == 0
    table, header = read_results(out)
    return table["ships"].tolist(), header["provenance"]["model"], capsys.readouterr().err


def test_tampered_cache_is_rebuilt_and_scores_as_before(fake_dequantise, tmp_path, capsys):
    gguf_path = write_gguf(tmp_path / "tiny.gguf")
    first, source, err = _scores(tmp_path, "first", gguf_path, capsys)
    assert len(fake_dequantise) == 1 and "dequantising tiny.gguf once" in err
    cache = _cache_folder(gguf_path)
    recorded = json.loads((cache / "COMPLETE").read_text())["files"]
    assert recorded["model.safetensors"] == sha256_file(cache / "model.safetensors")
    _, _, err = _scores(tmp_path, "second", gguf_path, capsys)
    assert len(fake_dequantise) == 1 and "dequantising" not in err  # verified, not rebuilt
    _tamper(cache)
    tampered, _, _ = _scores(tmp_path, "tampered", cache, capsys)  # the changed cache, read as a plain folder
    assert tampered != first  # so trusting it would change the scores under the GGUF's sha256
    third, source3, err = _scores(tmp_path, "third", gguf_path, capsys)
    assert len(fake_dequantise) == 2
    assert "does not match the sha256 recorded when it was written (model.safetensors" in err and "again" in err
    assert third == first and source3["sha256"] == source["sha256"] == sha256_file(gguf_path)
    assert json.loads((cache / "COMPLETE").read_text())["files"] == recorded
    assert not [p for p in cache.parent.iterdir() if p.name.startswith(".")]  # no staging or stale folder left


def test_a_file_added_to_the_cache_is_noticed(fake_dequantise, tmp_path, capsys):
    gguf_path = write_gguf(tmp_path / "tiny.gguf")
    _scores(tmp_path, "first", gguf_path, capsys)
    (_cache_folder(gguf_path) / "modeling_extra.py").write_text("print('hello')\n")
    _, _, err = _scores(tmp_path, "second", gguf_path, capsys)
    assert len(fake_dequantise) == 2 and "modeling_extra.py" in err
    assert not (_cache_folder(gguf_path) / "modeling_extra.py").exists()


def test_cache_without_a_digest_is_dequantised_again_once(fake_dequantise, tmp_path, capsys):
    """A cache from before the digests were recorded: rebuilt once, not trusted as it stands."""
    gguf_path = write_gguf(tmp_path / "tiny.gguf")
    _scores(tmp_path, "first", gguf_path, capsys)
    cache = _cache_folder(gguf_path)
    record = json.loads((cache / "COMPLETE").read_text())
    (cache / "COMPLETE").write_text(json.dumps({k: v for k, v in record.items() if k != "files"}))
    _tamper(cache)
    _, _, err = _scores(tmp_path, "second", gguf_path, capsys)
    assert len(fake_dequantise) == 2 and "records no sha256 of its files" in err
    _scores(tmp_path, "third", gguf_path, capsys)
    assert len(fake_dequantise) == 2


def test_tampered_read_only_cache_is_refused(fake_dequantise, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    gguf_path = write_gguf(work / "tiny.gguf")
    _scores(tmp_path, "first", gguf_path, capsys)
    _tamper(_cache_folder(gguf_path))
    real_access = os.access
    cache_root = models.cache_dir()
    # as root every folder is writable, so the read-only cache is simulated
    monkeypatch.setattr(models.os, "access", lambda p, mode, **k: False if Path(p).is_relative_to(cache_root)
                        else real_access(p, mode, **k))
    before = snapshot(work)
    capsys.readouterr()
    line = one_line_error(main(["ships", "--model", str(gguf_path), "--prompt", "hi", "--out",
                                str(work / "s.jsonl")]), capsys.readouterr().err)
    assert "does not match the sha256 recorded" in line and "read-only" in line
    assert snapshot(work) == before and len(fake_dequantise) == 1
