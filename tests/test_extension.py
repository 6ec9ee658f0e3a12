"""The extension profile end to end on the CPU: tiny random models of its four families (Llama with
GQA, Qwen2 with q/k/v biases, Gemma 2 with logit soft-capping and eager attention, Mistral), in bf16 as
the profile loads them, stand in for the Hub models; the sizes are cut down, the code path is the
extension's: one profile per model, its outputs under extension/<model>/, no expected values (every
metric NEW), a plan per model and artefact, and CLAIMS.md's extension section."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch

from safetyheads.store import Store
from safetyheads.testing import tiny_model, tiny_tokenizer

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # replication/ lives beside the package; appended so the installed safetyheads wins

from replication.claims import decide as claims_decide  # noqa: E402
from replication.claims import extension as claims_extension  # noqa: E402
from replication.cli import artefact as cli_artefact  # noqa: E402
from replication.cli.extension import plan_all, run_all, select  # noqa: E402
from replication.compute.context import Context  # noqa: E402
from replication.diff import expected as diff_expected  # noqa: E402
from replication.spec.extension_models import EXTENSION_ARTEFACTS, EXTENSION_MODELS  # noqa: E402
from replication.spec.profiles import EXTENSION, PROFILES, extension_profile  # noqa: E402

SET = "maliciousinstruct"
# The extension profile, cut down only in counts: its template, eps, judge, input formats, decodings,
# dtype and (absent) expected values stay the extension's. Its side judges lose Llama Guard 3, whose weights are
# not here (the model judges' harness path: tests/test_model_judges.py).
TINY_EXT = EXTENSION.replace(n_attribution=2, n_eval=2, max_new_tokens=3, sahara_steps=3, heatmap_n=1,
                             heatmap_max_new_tokens=2, sets=(SET,), table_sets=(SET,), side_judges=("three-way",))
FAMILY = {"llama-3.1-8b-instruct": "llama-gqa", "qwen2.5-7b-instruct": "qwen2", "gemma-2-9b-it": "gemma2",
          "mistral-7b-instruct-v0.3": "mistral"}
SEEDS = {"aligned": 0, "sibling": 1, "base": 2}
SLUGS = [m.slug for m in EXTENSION_MODELS]


class Loader:
    """Each Hub id of the model table -> a tiny random model of that row's family, in bf16."""

    def __init__(self):
        self.calls = []
        self.rows = {h.id: (m, role) for m in EXTENSION_MODELS for role, h in m.roles().items() if h}

    def __call__(self, role, name):
        m, row_role = self.rows[name]
        assert row_role == role, (role, name)
        self.calls.append((m.slug, role, name))
        family = FAMILY[m.slug]
        model = tiny_model(family, attn_implementation=m.attn_implementation, seed=SEEDS[role]).to(torch.bfloat16)
        model.safetyheads_source = {"model": name, "kind": "tiny stand-in", "family": family, "seed": SEEDS[role]}
        return model, tiny_tokenizer()


def no_load(role, name):
    raise AssertionError("a dry run loaded a model")


def bf16_sdpa_fails_on_forced_capability() -> str | None:
    """Why bfloat16 SDPA cannot run here, or None. torch 2.13's CPU flash-attention kernel picks its AMX path
    for bfloat16 from the hardware (from 64 tokens on) but packs with a routine that checks the *dispatch*
    capability: with ATEN_CPU_CAPABILITY=avx2 forced on a CPU that has AMX, every such call raises
    "pack_vnni2 is only supported when avx512 is supported". A real AVX2-only CPU has no AMX and takes the
    other path, so this is a property of the forced setting, not of AVX2 CPUs."""
    q = torch.zeros(1, 4, 64, 16, dtype=torch.bfloat16)
    try:
        torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    except RuntimeError as e:
        if "only supported when avx512" in str(e):
            return str(e)
        raise
    return None


@pytest.fixture(scope="module")
def ext_run(tmp_path_factory):
    why = bf16_sdpa_fails_on_forced_capability()
    if why:
        pytest.skip(f"bfloat16 SDPA cannot run with ATEN_CPU_CAPABILITY forced below this CPU's AMX ({why})")
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("ext")
    loader = Loader()
    profiles = select(TINY_EXT, None)
    code = run_all(profiles, list(EXTENSION_ARTEFACTS), Store(root / "store"), device="cpu", quiet=True,
                   out_root=root / "gen", loader=loader)
    return {"root": root, "gen": root / "gen", "code": code, "loader": loader, "profiles": profiles}


def metrics(folder: Path) -> dict:
    return {m["name"]: m for m in json.loads((folder / "metrics.json").read_text())["metrics"]}


# ------------------------------------------------------------------------------------------------
# the model table and the per-model profiles


def test_the_model_table_pins_what_it_can_and_plans_gqa_models():
    assert "extension" in PROFILES and EXTENSION.artefacts == ("figure2", "table3", "figure4", "figure5")
    assert not EXTENSION.expected_values and EXTENSION.dtype == "bfloat16"
    assert EXTENSION.input_formats == ("direct", "paper", "chat")
    harness_doc = (ROOT / "docs" / "harness.md").read_text()
    extension_doc = harness_doc.split("**The extension profile**", 1)[1].split("\n## ", 1)[0]
    for m in EXTENSION_MODELS:
        for h in filter(None, m.roles().values()):
            assert h.revision == "main" or re.fullmatch(r"[0-9a-f]{40}", h.revision), h
            if h.revision == "main":  # the docs say which could not be pinned
                assert h.id in extension_doc and "loads \"main\"" in extension_doc, h.id
        assert m.n_heads > m.n_kv_heads  # GQA, every one of them
        p = extension_profile(m.slug)
        assert p.folder == f"extension/{m.slug}" and p.models["aligned"] == m.aligned.id
        assert p.has("sibling") == (m.sibling is not None) and p.plan_geometry["aligned"] == (m.n_layers, m.n_heads)
        assert 0 < p.gpu_seconds_per_forward < 0.03 and p.gpu_rate_note.startswith("ASSUMED")
    gemma = extension_profile("gemma-2-9b-it")
    assert gemma.attn_implementation["aligned"] == "eager" and gemma.chat_system_prompt is None
    assert extension_profile("llama-3.1-8b-instruct").models["sibling"] == "allenai/Llama-3.1-Tulu-3-8B"


# ------------------------------------------------------------------------------------------------
# the run, end to end


def test_every_model_runs_every_artefact_into_its_own_folder(ext_run):
    assert ext_run["code"] == 0
    loaded = {(slug, role) for slug, role, _ in ext_run["loader"].calls}
    for slug in SLUGS:
        assert {(slug, "aligned"), (slug, "base")} <= loaded
        assert ((slug, "sibling") in loaded) == (slug == "llama-3.1-8b-instruct")
        for name in EXTENSION_ARTEFACTS:
            folder = ext_run["gen"] / "extension" / slug / name
            for f in ("results.jsonl", "metrics.json", "table.md", "diff.md"):
                assert (folder / f).is_file(), (slug, name, f)
            header = json.loads((folder / "results.jsonl").read_text().splitlines()[0])["header"]
            assert header["profile"]["name"] == "extension" and header["profile"]["variant"] == slug
            assert header["models"]["aligned"]["identity"]["family"] == FAMILY[slug]
            assert f"--model {slug}" in (folder / "table.md").read_text()
        for fig in ("figure2", "figure4", "figure5"):
            assert (ext_run["gen"] / "extension" / slug / fig / f"{fig}.png").stat().st_size > 1000
        assert json.loads((ext_run["gen"] / "extension" / slug / "timing.json").read_text())["seconds_per_forward"] > 0
        record = json.loads((ext_run["gen"] / "extension" / slug / "run_record.json").read_text())
        assert record["profile"] == "extension" and set(record["artefacts"]) == set(EXTENSION_ARTEFACTS)
        assert record["runs"]["cold"]["computed"] > 0 and record["runs"]["cold"]["artefacts"] == list(EXTENSION_ARTEFACTS)


def test_every_metric_is_new_even_beside_a_stray_expected_file(ext_run, tmp_path, monkeypatch):
    for slug in SLUGS:
        for name in EXTENSION_ARTEFACTS:
            text = (ext_run["gen"] / "extension" / slug / name / "diff.md").read_text()
            verdicts = re.findall(r"\| (PASS|DRIFT|FAIL|NEW|INFO) +\|", text)
            assert verdicts and set(verdicts) <= {"NEW", "INFO"}, (slug, name)
            assert "NEW" in verdicts and diff_expected.NO_EXPECTED_NOTE in text
    # an expected-values file someone left where a baseline would go is never read for the extension
    m = metrics(ext_run["gen"] / "extension" / SLUGS[1] / "figure2")
    for where in ("extension", f"extension/{SLUGS[1]}"):
        (tmp_path / "expected" / where).mkdir(parents=True, exist_ok=True)
        (tmp_path / "expected" / where / "figure2.json").write_text(json.dumps({"metrics": {
            k: {"value": 9.0, "kind": "number", "tolerance": 0} for k, v in m.items() if v["kind"] == "number"}}))
    monkeypatch.setattr(diff_expected, "EXPECTED", tmp_path / "expected")
    ctx = Context(ext_run["profiles"][1], Store(ext_run["root"] / "store"), loader=Loader(), device="cpu", progress=False)
    code, rows, _ = cli_artefact.run_artefact(ctx, "figure2", out_root=tmp_path / "gen", quiet=True)  # read back from the store
    assert code == 0 and {r["verdict"] for r in rows} <= {"NEW", "INFO"}


def test_figure2_adds_the_chat_input_and_the_sibling_only_where_named(ext_run):
    for slug in SLUGS:
        m = metrics(ext_run["gen"] / "extension" / slug / "figure2")
        for tmpl in ("direct", "paper", "chat"):
            assert f"aligned.ua.greedy.{tmpl}.{SET}.ablated" in m and f"aligned.sc.top5.{tmpl}.{SET}.vanilla" in m
        assert any(k.startswith("sibling.") for k in m) == (slug == "llama-3.1-8b-instruct")
        f5 = metrics(ext_run["gen"] / "extension" / slug / "figure5")
        assert ("b.overlap" in f5) == (slug == "llama-3.1-8b-instruct")
        assert "a.overlap" in f5 and "b.control_aligned.overlap" in f5 and "top10.base.ua" in f5
        assert f5["candidates"]["value"] == 12  # 3 layers x 4 query heads (2 key/value heads: GQA)
    # the chat input carries the model's own system prompt, none for Gemma 2
    prompts = {}
    for spec_file in (ext_run["root"] / "store").glob("completions/*/*/spec.json"):
        spec = json.loads(spec_file.read_text())["spec"]
        if spec["template"] == "chat":
            prompts.setdefault(spec["model"]["model"], set()).add(spec["system_prompt"])
    by_id = {m.aligned.id: m for m in EXTENSION_MODELS}
    for model_id, m in by_id.items():
        assert prompts[model_id] == {m.chat_system_prompt}, model_id


# ------------------------------------------------------------------------------------------------
# the plan


def test_dry_run_plans_each_model_and_artefact_and_uses_a_measured_rate(ext_run, tmp_path):
    profiles = select(TINY_EXT, None)
    text = plan_all(profiles, list(EXTENSION_ARTEFACTS), Store(tmp_path / "store"), tmp_path / "gen", loader=no_load)
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").iterdir())  # planning writes nothing
    table = text.split("== extension: cost per model and artefact", 1)[1]
    for slug in SLUGS:
        assert f"== {slug}:" in text
        for name in EXTENSION_ARTEFACTS:
            assert re.search(rf"\| {re.escape(slug)} +\| {name} +\|[^\n]*\| assumed", table), (slug, name)
        assert re.search(rf"\| {re.escape(slug)} +\| \(model total\)", table)
    assert "ASSUMED, not measured" in text and "all models" in table
    # after a run, its timing.json gives the measured seconds per row
    measured = plan_all(profiles[:1], ["figure2"], Store(tmp_path / "store"), ext_run["gen"], loader=no_load)
    assert "MEASURED" in measured and re.search(r"\| figure2 +\|[^\n]*\| measured", measured)


def test_the_cli_plans_the_full_size_profile_offline(tmp_path, capsys):
    from replication.__main__ import main

    assert main(["run", "figure2", "--profile", "extension", "--model", "qwen2.5-7b-instruct", "--dry-run",
                 "--store", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert "Qwen/Qwen2.5-7B-Instruct@a09a35458c702b33eeacc393d103063234e8bc28" in out and "== llama" not in out
    assert re.search(r"\| qwen2\.5-7b-instruct +\| figure2 +\| +[\d,]+ \|", out)
    assert "bf16" in out and "GPU-hours" in out


@pytest.mark.parametrize("argv,expected", [
    (["run", "table1", "--profile", "extension", "--dry-run"], "runs figure2, table3, figure4, figure5"),
    (["run", "figure2", "--profile", "extension", "--model", "gpt-5", "--dry-run"], "unknown extension model 'gpt-5'"),
    (["run", "figure2", "--profile", "ci", "--model", "qwen2.5-7b-instruct", "--dry-run"], "--model picks models"),
    (["update-baselines", "--profile", "extension"], "no expected values by design"),
    (["responses", "figure2", "--profile", "extension"], "add --model SLUG"),
])
def test_bad_extension_input_is_one_line(argv, expected, capsys):
    from replication.__main__ import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err


# ------------------------------------------------------------------------------------------------
# claims


def test_claims_extension_section_names_every_model_and_applies_the_rules(ext_run, tmp_path):
    lines = "\n".join(claims_extension.extension_section(root=ext_run["gen"]))
    assert lines.startswith("## Extension")
    found = claims_extension.evaluate_extension(root=ext_run["gen"])
    for slug in SLUGS:
        assert slug in lines
        mine = {c.id: f for m, c, f in found if m.slug == slug}
        assert set(mine) == {*claims_extension.EXTENSION_CLAIM_IDS, *claims_extension.CHAT_CLAIM_IDS}
        for cid, f in mine.items():
            sibling_claim = cid in claims_extension.SIBLING_CLAIM_IDS and slug != "llama-3.1-8b-instruct"
            assert (f.verdict == claims_decide.NOT_RUN) == sibling_claim, (slug, cid, f)
            if not sibling_claim:
                assert f.uncertainty, (slug, cid)
    # no results yet: one "not run" row per model, and CLAIMS.md's main table is left to the paper's claims
    empty = claims_extension.evaluate_extension(root=tmp_path)
    assert [(m.slug, c, f.verdict) for m, c, f in empty] == [(s, None, claims_decide.NOT_RUN) for s in SLUGS]
