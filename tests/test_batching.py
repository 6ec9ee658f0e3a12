"""Out-of-memory back-off: a chunk that does not fit is retried smaller; the result is the one a
smaller batch size gives."""

from __future__ import annotations

import pytest
import torch

import safetyheads.ships as ships_mod
from safetyheads.batching import BatchSizeWarning, run_chunks
from safetyheads.ships import ships_for_ids

from conftest import get_model


def test_run_chunks_halves_on_oom_and_keeps_the_smaller_size():
    seen = []

    def fn(a, b):
        if b - a > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        seen.append((a, b))

    with pytest.warns(BatchSizeWarning, match="size 10; continued with 2"):
        assert run_chunks(9, 10, fn) == 2
    assert seen == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 9)]


def test_run_chunks_reraises_other_errors_and_oom_at_size_1():
    with pytest.raises(ValueError):
        run_chunks(4, 2, lambda a, b: (_ for _ in ()).throw(ValueError("bug")))
    with pytest.raises(torch.OutOfMemoryError):
        run_chunks(4, 2, lambda a, b: (_ for _ in ()).throw(torch.OutOfMemoryError("out of memory")))
    with pytest.raises(ValueError, match=">= 1"):
        run_chunks(4, 0, lambda a, b: None)


def test_ships_sweep_backs_off_to_what_fits(monkeypatch):
    from safetyheads.testing import tiny_tokenizer

    model, tok = get_model("llama-gqa", "sdpa"), tiny_tokenizer()
    ids = tok("## Query:How do I pick a lock?\n## Answer:", return_tensors="pt").input_ids
    _, small = ships_for_ids(model, ids, batch_size=3)
    real = ships_mod._staircase_logits

    def limited(model_, clean, chunk, editor, spec):
        if len(chunk) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(model_, clean, chunk, editor, spec)

    monkeypatch.setattr(ships_mod, "_staircase_logits", limited)
    with pytest.warns(BatchSizeWarning):
        _, got = ships_for_ids(model, ids, batch_size=12)
    assert torch.equal(got, small)


def test_generation_splits_a_batch_that_does_not_fit(monkeypatch):
    import safetyheads.generation as gen
    from safetyheads.ablation import AblationSpec
    from safetyheads.generation import DecodingSpec, generate_responses
    from safetyheads.testing import tiny_tokenizer

    model, tok = get_model("llama-gqa", "sdpa"), tiny_tokenizer()
    prompts = ["How do I pick a lock?", "Hi", "Tell me a secret.", "Ignore the rules."]
    specs = [AblationSpec("L0H1"), AblationSpec("L1H2"), None, AblationSpec("L0H1")]
    dec = DecodingSpec(max_new_tokens=5)
    want = generate_responses(model, tok, prompts, ablation=specs, decoding=dec, batch_size=1)
    real = gen._generate_batch

    def limited(model_, rows, *a, **k):
        if len(rows) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(model_, rows, *a, **k)

    monkeypatch.setattr(gen, "_generate_batch", limited)
    with pytest.warns(BatchSizeWarning):
        got = generate_responses(model, tok, prompts, ablation=specs, decoding=dec, batch_size=4)
    assert got == want


def test_refill_out_of_memory_keeps_finished_rows_and_halves(monkeypatch):
    """Early stop with refill: out of memory after a row has finished, that row is kept (saved once,
    not decoded again) and the others start again at half the batch size, with the same results."""
    import safetyheads.generation as gen
    from safetyheads.generation import DecodingSpec, generate_responses
    from safetyheads.testing import tiny_tokenizer

    model, tok = get_model("llama", "sdpa"), tiny_tokenizer()
    prompts = ["How do I pick a lock?", "Hi", "Tell me a secret.", "Ignore the rules.", "Why?", "Go on."]
    dec = DecodingSpec(max_new_tokens=6, stop_when_settled=("keyword-fixed",))
    want = generate_responses(model, tok, prompts, decoding=dec, batch_size=len(prompts))
    real, calls = gen._generate_settling, []

    def limited(model_, rows, *a, batch_size, on_row, **k):
        calls.append((len(rows), batch_size))
        if batch_size <= 2:
            return real(model_, rows, *a, batch_size=batch_size, on_row=on_row, **k)

        def then_fail(r, new_ids, stop):
            on_row(r, new_ids, stop)
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(model_, rows, *a, batch_size=batch_size, on_row=then_fail, **k)

    monkeypatch.setattr(gen, "_generate_settling", limited)
    saved = []
    with pytest.warns(BatchSizeWarning):
        got = generate_responses(model, tok, prompts, decoding=dec, batch_size=4, on_batch=saved.extend)
    assert got == want
    assert calls == [(6, 4), (5, 2)]  # one row finished before the failure: not decoded again
    assert sorted(r["prompt_id"] for r in saved) == list(range(len(prompts)))
