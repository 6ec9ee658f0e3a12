"""run_record.json: what each `run` measured, per artefact and for the run, with the latest cold record
(something computed) kept apart from the latest from-store one, so routine regenerations leave the cold
timings; and nothing else a run writes changes because of it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from safetyheads.store import Store
from safetyheads.testing import tiny_model, tiny_tokenizer

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # replication/ lives beside the package

from replication.cli import artefact as cli_artefact  # noqa: E402
from replication.compute.context import Context  # noqa: E402
from replication.results import run_record  # noqa: E402
from replication.results.write import OUTPUT_FILES  # noqa: E402
from replication.spec.profiles import PAPER  # noqa: E402

TINY = PAPER.replace(n_attribution=2, n_eval=2, max_new_tokens=4, sahara_steps=2, heatmap_n=1, heatmap_max_new_tokens=2,
                     sets=("maliciousinstruct",), table_sets=("maliciousinstruct",), side_judges=())


def loader(role, name):
    m = tiny_model("llama", attn_implementation="sdpa", seed=0)
    m.safetyheads_source = {"model": name, "kind": "tiny stand-in"}
    return m, tiny_tokenizer()


def run_once(store: Path, out: Path, name: str = "figure13") -> tuple[dict, Path]:
    torch.manual_seed(0)
    ctx = Context(TINY, Store(store), loader=loader, progress=False)
    _, _, seconds = cli_artefact.run_artefact(ctx, name, out_root=out, quiet=True)
    rec = run_record.artefact_record(ctx, name, seconds, out_root=out)
    return rec, run_record.write_run_record(ctx, [rec], seconds, out_root=out)


def test_a_cold_run_then_a_run_from_the_store_keep_both_records(tmp_path):
    store, out = tmp_path / "store", tmp_path / "gen"
    cold, path = run_once(store, out)
    assert path == out / "paper" / "run_record.json"
    assert cold["computed"] > 0 and cold["kind"] == "cold" and cold["read_before"] == 0 and cold["store_mib"] >= 0
    first = json.loads(path.read_text())
    metrics = (out / "paper" / "figure13" / "metrics.json").read_bytes()
    warm, _ = run_once(store, out)
    assert warm["computed"] == 0 and warm["read"] == warm["read_before"] > 0 and warm["kind"] == "from_store"
    second = json.loads(path.read_text())
    # the cold record survives the regeneration from the store, which is kept beside it
    assert second["artefacts"]["figure13"]["cold"] == first["artefacts"]["figure13"]["cold"]
    assert second["artefacts"]["figure13"]["from_store"]["computed"] == 0
    assert second["runs"]["cold"] == first["runs"]["cold"] and "from_store" in second["runs"]
    run = second["runs"]["cold"]
    for key in ("utc", "commit", "seconds", "peak_rss_mib", "store_mib", "outputs_mib"):
        assert key in run, key
    assert not run["whole_from_empty"]  # one artefact is not the whole profile
    assert run["peak_rss_mib"]["self"] > 0 and run["machine"]["cores"] >= 1 and run["machine"]["torch_threads"] >= 1
    # the record is the profile's, not one of the artefact folder's files, and the outputs did not change
    assert "run_record.json" not in OUTPUT_FILES and not (out / "paper" / "figure13" / "run_record.json").exists()
    assert (out / "paper" / "figure13" / "metrics.json").read_bytes() == metrics


def test_a_partial_run_does_not_replace_the_cold_record(tmp_path):
    """A run that computes a few entries and reads the rest (here: one entry removed from the store; in
    practice a resumed run, or a judge change needing new completions) is kept as ``partial``: its time is
    not the cold one."""
    import shutil

    store, out = tmp_path / "store", tmp_path / "gen"
    run_once(store, out)
    first = json.loads((out / "paper" / "run_record.json").read_text())
    entries = sorted(p for p in store.glob("*/*/*") if p.is_dir())
    assert len(entries) > 1
    shutil.rmtree(entries[-1])
    partial, path = run_once(store, out)
    assert partial["computed"] > 0 and partial["read_before"] > 0 and partial["kind"] == "partial"
    second = json.loads(path.read_text())
    assert second["artefacts"]["figure13"]["cold"] == first["artefacts"]["figure13"]["cold"]
    assert second["artefacts"]["figure13"]["partial"]["computed"] == partial["computed"]
    assert second["runs"]["cold"] == first["runs"]["cold"] and "partial" in second["runs"]


def test_a_damaged_record_is_started_afresh(tmp_path):
    path = tmp_path / "run_record.json"
    path.write_text("{not json")
    assert run_record.read_record(path) == {"artefacts": {}, "runs": {}}
    path.write_text("[1, 2]")
    assert run_record.read_record(path) == {"artefacts": {}, "runs": {}}


def test_merge_replaces_only_the_record_of_the_same_kind():
    run = {"utc": "t2", "commit": "c", "machine": {}, "profile": "ci", "kind": "cold"}
    old = {"artefacts": {"table1": {"cold": {"seconds": 5}, "from_store": {"seconds": 1}}}, "runs": {}}
    new = run_record.merge(old, run, [{"artefact": "table1", "kind": "from_store", "seconds": 2, "computed": 0}])
    assert new["artefacts"]["table1"]["cold"] == {"seconds": 5}
    assert new["artefacts"]["table1"]["from_store"]["seconds"] == 2
