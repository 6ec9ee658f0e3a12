"""Store keys and entry layout are a contract with every store already computed: the harness's steps
must key the same computation the same way (a changed key silently recomputes days of GPU work) and
write rows and results an earlier run can resume and read. The keys below were computed from fixed
specs before the steps were moved onto the job layer (issue 24); they must never change without a
migration (or a deliberate ``VERSIONS`` bump)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from safetyheads.generation import DecodingSpec
from safetyheads.heads import HeadRef
from safetyheads.store import Store, store_key
from safetyheads.testing import tiny_model, tiny_tokenizer

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # replication/ lives beside the package; appended so the installed safetyheads wins

from replication.compute.completions import completions  # noqa: E402
from replication.compute.context import Context, Queries  # noqa: E402
from replication.compute.steps import head_spec, sahara_group, ships_per_query  # noqa: E402
from replication.compute.stored import VERSIONS  # noqa: E402
from replication.compute.sweep import candidate_sweep  # noqa: E402
from replication.spec.profiles import CI, PAPER  # noqa: E402

PINNED = [
    ("sahara", "fe28711ea66cc482de5397514038b85117b332940760a2133e33e2b10f25c582"),
    ("sahara", "21078efdeac72cfd30985989b6f5b13600d349671e37dba50e15f7f2254c174d"),
    ("ships", "00a50181672ed2dc11102882765b28b7c7916973a6976925a31facbe9d1adc97"),
    ("ships", "3b6688c0ba194827a92d4d4a1c1e57771404f681fe5f35d17ead8bb0ab083dbb"),
    ("completions", "d6fa854740dc73f740bb78006f73946b415672104d227051949ae9049ca90175"),
    ("completions", "52743644f386151933777b0ccc81984fa3e0f013a34ec2ea2298409fcb441203"),
    ("completions", "17de309f6b0ebee4de55b098ea4de86199e5e98dbd53b39fd0b0dee10353a74d"),
    ("completions", "61fb7ad0c4f0f6b162d7f60287fe9e3388d37a63d92dcbcd029ab1677531906b"),
    ("sweep", "9f8093377376b6877ec49241269bf99e451b5cc60941731a98b21eda05487359"),
]
# the same four completions with the profile's early stop: the text_read one keeps its key
PINNED_EARLY_STOP = [
    "90ae0c4548c64d5872c1b8a32d67c98fe8725b8747ec588808f5e8b0c0c8f490",
    "ab147e251b20bacdd8af794ff1be5718d1beca8469834aaf5a994a51398232fd",
    "bbd815593b5c2a5fe56acb0e33994477b3e01aacd48b516eef202121f7217441",
    "61fb7ad0c4f0f6b162d7f60287fe9e3388d37a63d92dcbcd029ab1677531906b",
]


def planned_keys(profile, tmp_path) -> list[tuple[str, str]]:
    """Every step once, in plan mode with the paper's Hub models: keyed as a run would, nothing loaded."""
    ctx = Context(profile, Store(tmp_path), plan_only=True, progress=False, device="cpu")
    q = ctx.queries("maliciousinstruct", "eval")
    q4 = Queries(q.set, q.sha256, q.ids[:4], q.prompts[:4])
    sahara_group(ctx, "aligned", "maliciousinstruct", "ua")
    sahara_group(ctx, "base", "jailbreakbench", "sc", steps=1)
    ships_per_query(ctx, "aligned", q4, "ua")
    ships_per_query(ctx, "sibling", q4, "ua", template="chat", system_prompt="You are a helpful assistant", eps=1e-4)
    completions(ctx, "aligned", q4)
    completions(ctx, "aligned", q4, ablation=head_spec([HeadRef(2, 26)], "ua", 1e-5), label="L2H26")
    completions(ctx, "aligned", q4,
                  ablation={pid: (head_spec([HeadRef(pid, 1)], "sc", 1e-5) if pid % 2 else None) for pid in q4.ids})
    completions(ctx, "aligned", q4, decoding=DecodingSpec("topk", k=5, temperature=1.0, max_new_tokens=16, seed=3),
                  template="chat", prefill="Sure, here is", system_prompt="sys", variant="attn-from-base", text_read=True)
    candidate_sweep(ctx, "aligned", q4, "ua", [HeadRef(2, 26)], [(2, 1), (4, 2)])
    assert not Path(tmp_path).exists() or not list(Path(tmp_path).iterdir())  # planning writes nothing
    return [(u["kind"], u["key"]) for u in ctx.used.entries]


def test_step_keys_are_pinned(tmp_path):
    assert planned_keys(PAPER, tmp_path / "a") == PINNED
    # a profile that stops early cannot keep a model judge beside it (it reads whole responses only)
    early = planned_keys(PAPER.replace(stop_when_settled=True, side_judges=("three-way",)), tmp_path / "b")
    assert [k for kind, k in early if kind == "completions"] == PINNED_EARLY_STOP


# Keys of the ci profile's own entries, as the store that holds every ci result has them (recorded at
# 9f8bf35, before the harness was laid out in stages, issue 40): the organisms are keyed by their file
# hashes, so planning them loads nothing.
PINNED_CI = [
    ("sahara", "c3478ddb6f792e2e2a6c27d17b57d1cbc915fd87fc24205af40308e75f6efb18"),
    ("ships", "de33382874f7f2a2d980e7233e4556e111b5de999a2562a5f6a46d07949ca9bc"),
    ("completions", "53c70bef8ec32ce881d7ec431a67bff99ad514d14312ae3b96ea962a6b9c20c4"),
]


def test_ci_step_keys_are_pinned(tmp_path):
    ctx = Context(CI, Store(tmp_path), plan_only=True, progress=False, device="cpu")
    sahara_group(ctx, "aligned", "maliciousinstruct", "ua")
    ships_per_query(ctx, "aligned", ctx.ships_queries("maliciousinstruct"), "ua")
    completions(ctx, "aligned", ctx.queries("maliciousinstruct", "eval"))
    assert [(u["kind"], u["key"]) for u in ctx.used.entries] == PINNED_CI


def test_store_key_of_a_literal_spec_is_pinned():
    assert VERSIONS == {"sahara": 1, "ships": 1, "completions": 1, "small": 1, "sweep": 1, "verdicts": 1}
    spec = {"what": "geometry", "model": {"model": "m", "sha256": "ab"}}
    assert store_key("small", spec, VERSIONS["small"]) == \
        "0302728eda9f0f79bd4a4a953c3f989bb118d6d480376e9a319a474577dc256d"


def _loader(role, name):
    m = tiny_model("llama", attn_implementation="sdpa", seed=0)
    m.safetyheads_source = {"model": name, "kind": "tiny stand-in", "seed": 0}
    return m, tiny_tokenizer()


def test_entries_keep_their_layout(tmp_path):
    """What each kind writes in rows.jsonl and result.json, as earlier runs wrote it."""
    profile = PAPER.replace(n_attribution=2, n_eval=2, max_new_tokens=3, sahara_steps=2, sets=("maliciousinstruct",),
                            table_sets=("maliciousinstruct",), side_judges=("three-way",))  # no classifier weights here
    ctx = Context(profile, Store(tmp_path), loader=_loader, progress=False)
    q = ctx.queries("maliciousinstruct", "eval")
    sahara_group(ctx, "aligned", "maliciousinstruct", "ua")
    ships_per_query(ctx, "aligned", q, "ua")
    completions(ctx, "aligned", q)

    def entry(kind):
        (spec,) = list(tmp_path.glob(f"{kind}/*/*/spec.json"))
        rows = [json.loads(line) for line in (spec.parent / "rows.jsonl").read_text().splitlines()]
        return json.loads(spec.read_text()), rows, json.loads((spec.parent / "result.json").read_text())

    n_heads = len(ctx.candidates("aligned"))
    spec, rows, result = entry("sahara")
    assert set(spec) == {"kind", "version", "spec"} and spec["kind"] == "sahara"
    assert len(rows) == n_heads + n_heads - 1
    assert list(rows[0]) == ["step", "rank", "layer", "head", "head_name", "score", "group_before", "seconds"]
    assert all(list(r) == list(rows[0])[:-1] for r in rows[1:n_heads])  # the step's time rides on its first row
    assert list(result) == ["group", "scoreboard", "seconds", "n_queries", "n_candidates"]
    assert result["scoreboard"] == rows

    _, rows, result = entry("ships")
    assert len(rows) == 2 * n_heads
    assert list(rows[0]) == ["prompt_id", "head", "ships"] and isinstance(rows[0]["head"], str)
    assert list(rows[n_heads - 1]) == ["prompt_id", "head", "ships", "last", "seconds"]
    assert list(result) == ["rows", "seconds"] and result["rows"] == rows

    _, rows, result = entry("completions")
    assert [list(r) for r in rows] == [["prompt_id", "response", "n_new_tokens"]] * 2
    assert list(result) == ["rows"] and result["rows"] == rows
