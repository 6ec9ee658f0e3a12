"""Generalized Ships (subspace angles), last-token activations, and the Sahara group search."""

import math
import warnings

import numpy as np
import pytest
import torch

import safetyheads.sahara as sahara_mod
from safetyheads.ablation import AblationSpec
from safetyheads.activations import last_token_states
from safetyheads.cli import main
from safetyheads.errors import SafetyheadsError
from safetyheads.heads import all_heads
from safetyheads.prompts import encode_prompt
from safetyheads.results import read_results
from safetyheads.sahara import sahara
from safetyheads.ships import clean_pass
from safetyheads.subspace import generalized_ships, generalized_ships_batch
from safetyheads.testing import TINY_FAMILIES, tiny_model, tiny_tokenizer

from tolerances import EPS32, angle_atol, forward_atol, subspace_atol, zero_angle_atol

PROMPTS = ["hello there, how are you", "hi", "a much longer prompt with many more tokens", "tell me a joke", "x y z"]


def numpy_generalized_ships(A, B, r):
    """Straight from the definition: thin SVD, U_c^T U_a restricted to r columns, arccos of singular values."""
    Ua = np.linalg.svd(np.asarray(A, dtype=np.float64), full_matrices=False)[0][:, :r]
    Ub = np.linalg.svd(np.asarray(B, dtype=np.float64), full_matrices=False)[0][:, :r]
    s = np.clip(np.linalg.svd(Ua.T @ Ub, compute_uv=False), -1.0, 1.0)
    return float(np.degrees(np.arccos(s)).sum())


@pytest.mark.parametrize("r", [1, 2, 3])
def test_generalized_ships_matches_numpy(r):
    rng = np.random.default_rng(r)
    A, B = rng.normal(size=(12, 7)), rng.normal(size=(12, 7))
    # float64 angles of random subspaces, far from 0: each off by ~angle_atol (~1e-14 rad) << 1e-8 deg
    assert generalized_ships(torch.tensor(A), torch.tensor(B), r) == pytest.approx(numpy_generalized_ships(A, B, r), abs=1e-8)
    stack = torch.tensor(np.stack([B, A, 2 * B]))
    got = generalized_ships_batch(torch.tensor(A), stack, r)
    assert float(got[1]) == pytest.approx(0.0, abs=math.degrees(zero_angle_atol(r, *A.shape)))
    # scale does not change a subspace (2B: exact scaling by a power of two; 1e-6 deg >> angle_atol)
    assert float(got[0]) == pytest.approx(float(got[2]), abs=1e-6)


def test_known_angles():
    A = torch.zeros(4, 2)
    A[0, 0], A[1, 1] = 5.0, 1.0
    B = torch.zeros(4, 2)
    B[2, 0], B[3, 1] = 5.0, 1.0
    assert generalized_ships(A, A) == pytest.approx(0.0, abs=math.degrees(zero_angle_atol(1, *A.shape)))
    assert generalized_ships(A, B) == pytest.approx(90.0)
    assert generalized_ships(A, B, r=2) == pytest.approx(180.0)
    theta = 0.3
    C = torch.zeros(4, 2)
    C[0, 0], C[2, 0] = 5 * math.cos(theta), 5 * math.sin(theta)
    C[1, 1] = 1.0
    # C holds its coordinates rounded to fp32 (half an ulp each), which turns theta by < eps32;
    # the float64 angle is then that of the rounded C, to angle_atol
    stored = math.atan2(float(C[2, 0]), float(C[0, 0]))
    assert abs(stored - theta) <= EPS32
    atol = angle_atol(theta, *C.shape)
    assert generalized_ships(A, C, r=1) == pytest.approx(math.degrees(stored), abs=math.degrees(atol))
    assert generalized_ships(A, C, r=1, degrees=False) == pytest.approx(stored, abs=atol)


def test_bad_r():
    with pytest.raises(SafetyheadsError, match="r must be between 1 and"):
        generalized_ships(torch.randn(3, 5), torch.randn(3, 5), r=4)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_padded_activations_equal_unpadded(family):
    tok = tiny_tokenizer()
    model = tiny_model(family, "eager" if family == "gemma2" else "sdpa")
    batched = last_token_states(model, tok, PROMPTS, "paper", batch_size=5)
    single = torch.stack([clean_pass(model, encode_prompt(tok, p, "paper")).last_state for p in PROMPTS])
    assert (batched - single).abs().max() <= forward_atol(model, single)  # other batch shapes, padding
    assert tok.padding_side == "right"  # restored


# The tiny Gemma 3 attends within 4 tokens in all 3 layers: under the paper template the last token
# sees only the template's suffix, its states do not depend on the prompt, and every score would be
# rounding noise. The direct template ends in the prompt.
@pytest.mark.parametrize("family,method,target,template", [("llama", "ua", "q", "paper"), ("llama-gqa", "mean", "k", "paper"),
                                                           ("gpt2", "sc", "out", "paper"), ("gemma3", "ua", "q", "direct")])
def test_sahara_equals_exhaustive_search(family, method, target, template):
    warnings.simplefilter("ignore")
    tok = tiny_tokenizer()
    model = tiny_model(family)
    res = sahara(model, tok, PROMPTS, steps=2, method=method, eps=1e-5, target=target, r=2, batch_size=5, template=template)
    clean = last_token_states(model, tok, PROMPTS, template)
    group = []
    for step in (1, 2):
        exhaustive, atol = {}, {}
        for h in all_heads(model):
            if h in group:
                continue
            M = last_token_states(model, tok, PROMPTS, template, ablation=AblationSpec((*group, h), method, 1e-5, target))
            exhaustive[h] = generalized_ships(clean.double(), M.double(), r=2)
            # both paths' states carry fp32 noise, clean and ablated alike
            atol[h] = math.degrees(sum(subspace_atol(X, 2, forward_atol(model, X, probabilistic=True)) for X in (clean, M)))
        board = res.scoreboard[res.scoreboard.step == step]
        for _, row in board.iterrows():
            key = next(h for h in exhaustive if str(h) == row.head_name)
            assert row.score == pytest.approx(exhaustive[key], abs=atol[key])
        # Sahara's pick has the best score, up to the noise of both (heads of one KV group under a
        # k ablation are one ablation and tie exactly: rounding decides between them)
        best, pick = max(exhaustive, key=exhaustive.get), res.group[step - 1]
        assert exhaustive[pick] >= exhaustive[best] - atol[pick] - atol[best]
        assert len(board) == len(exhaustive)
        group.append(pick)


def test_sahara_bad_input():
    tok, model = tiny_tokenizer(), tiny_model("llama")
    with pytest.raises(SafetyheadsError, match="steps must be between 1 and 5"):
        sahara(model, tok, PROMPTS, steps=6)
    with pytest.raises(SafetyheadsError, match="at least one query"):
        sahara(model, tok, [], steps=1)
    with pytest.raises(SafetyheadsError, match="r must be between"):
        sahara(model, tok, PROMPTS[:2], steps=1, r=3)


@pytest.fixture()
def tiny_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFETYHEADS_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "tiny"
    tiny_model("llama").save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    data = tmp_path / "q.csv"
    import pandas as pd

    pd.DataFrame({"input": PROMPTS}).to_csv(data, index=False)
    return path, data


def test_sahara_cli_kill_and_resume(tiny_folder, tmp_path, monkeypatch, capsys):
    folder, data = tiny_folder
    argv = ["sahara", "--model", str(folder), "--data", str(data), "--steps", "3", "--r", "2", "--attn", "eager",
            "--quiet", "--batch-size", "5"]
    assert main(argv + ["--out", str(tmp_path / "ref.jsonl")]) == 0
    ref_group = capsys.readouterr().out.split("Sahara group: ")[1].splitlines()[0]

    real = sahara_mod.candidate_states
    calls = []

    def crash_in_step_two(*a, **k):
        calls.append(1)
        if len(calls) == len(PROMPTS) + 2:  # step 1 done (one call per query), crash inside step 2
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(sahara_mod, "candidate_states", crash_in_step_two)
    out = tmp_path / "run.jsonl"
    assert main(argv + ["--out", str(out)]) == 130
    assert set(read_results(out)[0]["step"]) == {1}
    calls.clear()
    monkeypatch.setattr(sahara_mod, "candidate_states", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    assert main(argv + ["--out", str(out)]) == 0
    text = capsys.readouterr()
    assert "resuming" in text.err and "steps 1..1 already done" in text.err
    assert len(calls) == 2 * len(PROMPTS)  # steps 2 and 3 only
    assert text.out.split("Sahara group: ")[1].splitlines()[0] == ref_group
    table = read_results(out)[0]
    assert sorted(table.groupby("step").size().tolist(), reverse=True) == [12, 11, 10]


def test_sahara_cli_bad_steps(tiny_folder, capsys):
    folder, data = tiny_folder
    assert main(["sahara", "--model", str(folder), "--data", str(data), "--steps", "9"]) == 2
    assert "--steps must be between 1 and 5" in capsys.readouterr().err
