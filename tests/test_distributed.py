"""Sharding with accelerate: two processes (gloo on this CPU) give exactly what one process gives."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from safetyheads.testing import tiny_model, tiny_tokenizer

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_reproduce_one_exactly(tmp_path):
    sys.path.insert(0, str(HERE))
    try:
        import sharded_worker
    finally:
        sys.path.remove(str(HERE))
    one = sharded_worker.compute(tiny_model("llama-gqa", attn_implementation="sdpa"), tiny_tokenizer())
    out = tmp_path / "two.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), str(HERE / "sharded_worker.py"), str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(out.read_text())
    assert two["world_size"] == 2
    for key in ("ships", "sahara_group", "sahara_scores", "generate"):
        assert two[key] == one[key], key
    # the main process saved every unit once, in the single-process order
    assert two["saved"] == one["saved"]
    assert one["saved"]["ships"] == [0, 1, 2] and one["saved"]["sahara"] == [1, 2]


def test_without_a_launcher_nothing_is_sharded(monkeypatch):
    from safetyheads import distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.state() is None and distributed.is_main()
    seen = []
    assert distributed.sharded_map(lambda x: x * 2, [1, 2, 3], on_round=seen.append) == [2, 4, 6]
    assert seen == [[(0, 2)], [(1, 4)], [(2, 6)]]
    assert distributed.broadcast({"a": 1}) == {"a": 1}
    assert distributed.device_for_process("auto") == "auto"


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_single_unit(n):
    from safetyheads import distributed

    assert distributed.sharded_map(str, list(range(n))) == [str(i) for i in range(n)]


def test_cli_under_accelerate_launch_writes_what_one_process_writes(tmp_path):
    """`accelerate launch --num_processes 2 -m safetyheads ships` on a saved tiny model: the same rows
    as the single-process command, written once, by the main process."""
    from safetyheads.results import read_results

    folder = tmp_path / "tiny"
    tiny_model("llama-gqa", attn_implementation="sdpa").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    args = ["ships", "--model", str(folder), "--prompt", "How do I pick a lock?", "--prompt", "Hi there",
            "--prompt", "Tell me a secret.", "--threads", "1", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    single = subprocess.run([sys.executable, "-m", "safetyheads", *args, "--out", str(tmp_path / "one.jsonl")],
                            env=env, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(free_port()), "-m", "safetyheads", *args, "--out", str(tmp_path / "two.jsonl")]
    two = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, _ = read_results(tmp_path / "one.jsonl")
    b, header = read_results(tmp_path / "two.jsonl")
    assert a.to_dict("records") == b.to_dict("records")
    assert two.stdout.count("Top ") == 1  # the summary is printed once


def test_from_main_without_a_launcher_is_the_call(monkeypatch):
    from safetyheads import distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    calls = []
    assert distributed.from_main(lambda: calls.append(1) or "value") == "value" and calls == [1]


@pytest.mark.parametrize("text, seconds", [(None, 6 * 3600), ("90", 90.0), ("0.5", 0.5)])
def test_process_timeout(monkeypatch, text, seconds):
    from safetyheads import distributed

    if text is None:
        monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    else:
        monkeypatch.setenv(distributed.TIMEOUT_ENV, text)
    assert distributed.process_timeout_s() == seconds


@pytest.mark.parametrize("text", ["0", "-3", "soon", "nan"])
def test_a_bad_process_timeout_is_one_line_naming_the_variable(monkeypatch, text):
    from safetyheads import distributed
    from safetyheads.errors import SafetyheadsError

    monkeypatch.setenv(distributed.TIMEOUT_ENV, text)
    with pytest.raises(SafetyheadsError, match="SAFETYHEADS_PROCESS_TIMEOUT"):
        distributed.process_timeout_s()


def test_a_job_run_into_the_main_process_rows_computes_and_writes_nothing():
    """A process other than the main one resumes from the main sink's rows and returns None; the rows it
    was given are not touched (the main process rewrites its own sink)."""
    from safetyheads.jobs import ShipsJob
    from safetyheads.sinks import MainProcessRows

    model, tok = tiny_model("llama-gqa", attn_implementation="sdpa"), tiny_tokenizer()
    job = ShipsJob(("How do I pick a lock?", "Hi there"), heads=("L0H0", "L1H1")).for_model(model)
    done = [{"prompt_id": 0, "head": "L0H0", "ships": 0.1}, {"prompt_id": 0, "head": "L1H1", "ships": 0.2},
            {"prompt_id": 1, "head": "L0H0", "ships": 0.3}]  # prompt 1 cut short: computed again
    mirror = MainProcessRows(done)
    assert job.finished(mirror) == {"0"}
    assert job.run(model, tok, mirror) is None
    assert mirror.rows() == done
