"""Text generation, plain or under a head ablation, batched and reproducible.

``generate_responses`` formats each query with a paper template (``safetyheads.prompts``),
optionally appends a prefill (``"Sure, here is"``) that the model then continues, left-pads a
batch, and runs ``model.generate`` inside ``safetyheads.ablate``. Prompts may carry different
ablations (Ships' top heads differ per query): prompts with the same spec share batches.

Decoding follows the paper (``docs/paper.md``, "Generation and judging"): greedy, or
top-k sampling (multinomial over the renormalised top-k at temperature T), 128 new tokens, stop
at EOS. Sampling draws from one ``torch.Generator`` per prompt, seeded from ``(seed, prompt_id)``
on the CPU, so a prompt's response does not depend on the batch it lands in, the batch size, the
device's RNG, or which prompts a resumed run still has to do.

Left padding is exact: transformers derives the position ids from the attention mask
(``cumsum - 1``), so a padded row sees the positions, keys and values it would see alone
(tested on tiny models of every family, and on the embedded model).

Early stop (opt-in, ``DecodingSpec(stop_when_settled=(judge names...))``): a row stops as soon as
its text's verdict is settled for every named judge (``safetyheads.judges.Judge.settled``: a
refusal match that no continuation can undo), and leaves the batch (its KV-cache rows, mask and
sampler go), so the rest of the batch runs smaller. On one process, for models whose generation
cache is made of plain dynamic layers (``early_stop.can_refill``), waiting rows of the same
ablation family join the batch once half of it has left (refill), so one row that never settles
does not decode alone while the others wait; finished rows reach ``on_batch`` ``batch_size`` at a
time, in the order they finish. The remaining rows decode exactly as in a run without early stop
(a row's output does not depend on its batch, as above), and a stopped row's tokens are the first
tokens of its full response, so the named judges give the same verdicts.

``decoding.py`` holds the spec, the sampler and the padding; ``early_stop.py`` the step loop.
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from typing import Callable, ContextManager, Sequence

import torch
from tqdm.auto import tqdm

from .ablation import AblationSpec, GQAGroupWarning, ablate, ablate_rows, row_family
from .batching import BatchSizeWarning, chunks, is_oom
from .decoding import MODES, DecodingSpec, TopKRowSampler, int_at_least, left_pad, row_seed  # noqa: F401 (re-exported)
from .distributed import is_main, sharded_map, state as distributed_state
from .early_stop import can_refill, generate_settling as _generate_settling, settle_check as _settle_check
from .errors import AblationError, DataError, SafetyheadsError
from .models import eos_token_ids, plain_generation_config  # noqa: F401 (eos_token_ids re-exported: it lived here)
from .prompts import encode_for_generation, generation_text  # noqa: F401 (re-exported: they lived here)


def pad_token_id(tok, eos_ids: list[int]) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else eos_ids[0]



def _generate_batch(model, rows: Sequence[Sequence[int]], seeds: Sequence[int], decoding: DecodingSpec,
                    eos_ids: list[int], pad_id: int) -> list[list[int]]:
    """New token ids of each row (up to max_new_tokens; finished rows are padded by transformers)."""
    from transformers import GenerationConfig, LogitsProcessorList  # heavy: `import safetyheads` stays fast

    input_ids, attention_mask = left_pad(rows, pad_id)
    device = model.device
    config = GenerationConfig(
        max_new_tokens=decoding.max_new_tokens, do_sample=False, num_beams=1,
        eos_token_id=eos_ids, pad_token_id=pad_id, use_cache=True,
    )
    processors = LogitsProcessorList(
        [TopKRowSampler(seeds, decoding.k, decoding.temperature)] if decoding.sampling else []
    )
    with torch.no_grad(), plain_generation_config(model):
        out = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                             generation_config=config, logits_processor=processors)
    return out[:, input_ids.shape[1]:].cpu().tolist()


def _finish(new_ids: list[int], eos_ids: list[int]) -> tuple[list[int], int, bool]:
    """(text tokens, n_new_tokens counting the EOS, stopped_at_eos)."""
    for i, t in enumerate(new_ids):
        if t in eos_ids:
            return new_ids[:i], i + 1, True
    return new_ids, len(new_ids), False


def per_prompt_ablation(ablation, n: int) -> list[AblationSpec | None]:
    """Each of ``n`` prompts' ablation (None: none) from None, one AblationSpec for every prompt, or a
    list with one per prompt; checked where generation runs and where a job is specified (``jobs``)."""
    if ablation is None or isinstance(ablation, AblationSpec):
        return [ablation] * n
    if isinstance(ablation, (list, tuple)):
        specs = list(ablation)
        if len(specs) != n:
            raise AblationError(f"got {len(specs)} ablations for {n} prompts: a per-prompt ablation needs one entry "
                                "per prompt (None = no ablation)")
        for s in specs:
            if s is not None and not isinstance(s, AblationSpec):
                raise AblationError(f"per-prompt ablations must be AblationSpec or None, got {type(s).__name__}")
        return specs
    raise AblationError(
        f"ablation must be None, an AblationSpec, or a list of them (one per prompt), got {type(ablation).__name__}"
    )


def _checked_arguments(prompts, decoding, batch_size, prefill, prompt_ids) -> tuple[list[str], int, str | None, list]:
    """``generate_responses``' arguments checked: (prompts as a list, batch size, prefill or None, prompt ids)."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not isinstance(decoding, DecodingSpec):
        raise SafetyheadsError(f"decoding must be a DecodingSpec, got {type(decoding).__name__}")
    batch_size = int_at_least(batch_size, 1, "batch_size")
    if prefill is not None and not isinstance(prefill, str):
        raise DataError(f"prefill must be a string, got {type(prefill).__name__}")
    prompt_ids = list(range(len(prompts))) if prompt_ids is None else list(prompt_ids)
    if len(prompt_ids) != len(prompts):
        raise DataError(f"got {len(prompt_ids)} prompt_ids for {len(prompts)} prompts: give one per prompt")
    return prompts, batch_size, prefill or None, prompt_ids


def _batches(specs: list, batch_size: int) -> list[list[int]]:
    """Prompts whose specs share method, eps and target (each row ablating its own heads), groups in
    order of first appearance, prompts in input order (a row's output does not depend on its batch)."""
    groups: dict = {}
    for i, spec in enumerate(specs):
        groups.setdefault(row_family(spec), []).append(i)
    return [batch for members in groups.values() for batch in chunks(members, batch_size)]


class _BatchRun:
    """One call's batches: the encoded prompts, each prompt's ablation and sampler seed, how to decode."""

    def __init__(self, model, encoded, specs, seeds, decoding: DecodingSpec, eos_ids: list[int], pad_id: int,
                 settled: Callable[[list[int]], bool] | None):
        self.model, self.encoded, self.specs, self.seeds = model, encoded, specs, seeds
        self.decoding, self.eos_ids, self.pad_id, self.settled = decoding, eos_ids, pad_id, settled

    def context(self, members, batch_rows: list[int]) -> ContextManager:
        """The ablation of the listed rows of the batch ``members`` (one spec for all, or one per row)."""
        row_specs = [self.specs[members[r]] for r in batch_rows]
        if len(set(row_specs)) == 1:
            return ablate(self.model, row_specs[0]) if row_specs[0] is not None else nullcontext()
        return ablate_rows(self.model, row_specs)

    def generate(self, members) -> list[tuple[list[int], int | None]]:
        """(new ids, early-stop token count or None) of each row of a batch; a batch that runs out of
        memory is split in two (rows do not depend on their batch, so the output is the same)."""
        seeds = [self.seeds[i] for i in members]
        rows = [self.encoded[i] for i in members]
        model, decoding = self.model, self.decoding
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", GQAGroupWarning)  # already raised once, by the check before
                if self.settled is not None:
                    new, stops = _generate_settling(model, rows, seeds, decoding, self.eos_ids, self.pad_id,
                                                    self.settled, lambda batch_rows: self.context(members, batch_rows))
                    return list(zip(new, stops))
                with self.context(members, list(range(len(members)))):
                    return [(ids, None) for ids in _generate_batch(model, rows, seeds, decoding, self.eos_ids, self.pad_id)]
        except Exception as e:  # noqa: BLE001 - only out-of-memory is handled
            if not is_oom(e) or len(members) == 1:
                raise
        half = len(members) // 2
        warnings.warn(f"out of memory generating a batch of {len(members)}: split in two", BatchSizeWarning, stacklevel=2)
        return self.generate(members[:half]) + self.generate(members[half:])

    def generate_refilling(self, members, batch_size: int, on_row: Callable[[int, list[int], int | None], None]) -> None:
        """Early stop with refill over all of ``members`` (``early_stop.generate_settling``), at most
        ``batch_size`` rows at once; ``on_row(prompt index, new ids, stop)`` as each row finishes. Out of
        memory, the rows not finished yet start again at half the batch size."""
        todo = list(members)
        while todo:
            done: set[int] = set()

            def finished(r, new_ids, stop, todo=todo, done=done):
                done.add(todo[r])
                on_row(todo[r], new_ids, stop)

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", GQAGroupWarning)  # already raised once, by the check before
                    _generate_settling(self.model, [self.encoded[i] for i in todo], [self.seeds[i] for i in todo],
                                       self.decoding, self.eos_ids, self.pad_id, self.settled,
                                       lambda batch_rows, todo=todo: self.context(todo, batch_rows),
                                       batch_size=batch_size, on_row=finished)
                return
            except Exception as e:  # noqa: BLE001 - only out-of-memory is handled
                if not is_oom(e) or batch_size == 1:
                    raise
            todo = [i for i in todo if i not in done]
            warnings.warn(f"out of memory generating a batch of {batch_size}: now {batch_size // 2}", BatchSizeWarning,
                          stacklevel=2)
            batch_size //= 2


def generate_responses(
    model,
    tok,
    prompts: Sequence[str],
    *,
    template: str = "paper",
    system_prompt: str | None = None,
    ablation: "AblationSpec | Sequence[AblationSpec | None] | None" = None,
    decoding: DecodingSpec = DecodingSpec(),
    prefill: str | None = None,
    batch_size: int = 8,
    prompt_ids: Sequence | None = None,
    progress: bool = False,
    on_batch: Callable[[list[dict]], None] | None = None,
) -> list[dict]:
    """Generate one response per prompt, in the order of ``prompts``.

    ``ablation``: None, one AblationSpec for every prompt, or a list with an AblationSpec or None
    per prompt (prompts with equal specs are batched together). ``prefill`` is appended verbatim to
    the formatted prompt and continued by the model; ``response`` holds only the new text (the
    full answer is ``prefill + response``). ``prompt_ids`` (default 0..n-1) name the prompts in the
    results and seed their samplers, so a subset rerun with the same ids reproduces its rows.
    ``on_batch(rows)`` is called with each finished batch's result dicts (the CLI saves them).

    Each result: ``prompt_id, prompt, template, prefill, response, n_new_tokens`` (counting the
    EOS token when there is one), ``stopped_at_eos, ablation`` (``spec.to_dict()`` or None),
    ``decoding`` (``decoding.to_dict()``). With ``decoding.stop_when_settled`` also
    ``stopped_early`` (cut once settled, before EOS and the token limit), ``stop_token`` (its
    ``n_new_tokens`` then, else None) and ``settled_for`` (the judge names); judge such rows only
    with those judges (``safetyheads.judges.check_rejudge``).
    """
    prompts, batch_size, prefill, prompt_ids = _checked_arguments(prompts, decoding, batch_size, prefill, prompt_ids)
    specs = per_prompt_ablation(ablation, len(prompts))
    for spec in dict.fromkeys(s for s in specs if s is not None):
        spec.check(model, stacklevel=3)  # fail (or warn about GQA) before any compute
    encoded = [encode_for_generation(tok, p, template, system_prompt, prefill) for p in prompts]
    eos_ids = eos_token_ids(model, tok)
    run = _BatchRun(model, encoded, specs, [row_seed(decoding.seed, i) for i in prompt_ids], decoding, eos_ids,
                    pad_token_id(tok, eos_ids),
                    _settle_check(tok, prefill, decoding.stop_when_settled) if decoding.stop_when_settled else None)
    result = _row_maker(tok, prompts, prompt_ids, template, prefill, specs, decoding, eos_ids, run.settled is not None)
    return _generate_all(model, run, specs, batch_size, result, len(prompts), on_batch, progress)


def _generate_all(model, run: _BatchRun, specs: list, batch_size: int, result: Callable, n: int,
                  on_batch: Callable | None, progress: bool) -> list[dict]:
    """Every prompt's result dict, in prompt order, ``on_batch`` called with each finished batch."""
    def run_batch(members):
        return [result(i, new_ids, stop_token) for i, (new_ids, stop_token) in zip(members, run.generate(members))]

    # Under `accelerate launch` the batches are dealt over the processes (a batch = a unit computed as
    # alone); on_batch runs on the main process, in batch order, as each round is gathered.
    results: list[dict | None] = [None] * n
    bar = tqdm(total=n, unit="prompt", desc="generate", disable=not (progress and is_main()))

    def finished(rounds):
        for _, done in rounds:
            if on_batch:
                on_batch(done)
            bar.update(len(done))

    try:
        if run.settled is not None and distributed_state() is None and can_refill(model):
            _generate_refilling(run, specs, batch_size, result, results, finished)
        else:
            batches = _batches(specs, batch_size)
            for members, done in zip(batches, sharded_map(run_batch, batches, on_round=finished)):
                for i, row in zip(members, done):
                    results[i] = row
    finally:
        bar.close()
    return results


def _row_maker(tok, prompts: list, prompt_ids: list, template: str, prefill: str | None, specs: list,
               decoding: DecodingSpec, eos_ids: list[int], early_stop: bool) -> Callable[[int, list[int], int | None], dict]:
    """``generate_responses``' result dict of prompt i from its new ids and early-stop token count."""
    dec_dict = decoding.to_dict()

    def result(i, new_ids, stop_token) -> dict:
        text_ids, n_new, stopped = _finish(new_ids, eos_ids)
        row = {
            "prompt_id": prompt_ids[i],
            "prompt": prompts[i],
            "template": template,
            "prefill": prefill,
            "response": tok.decode(text_ids, skip_special_tokens=True),
            "n_new_tokens": n_new,
            "stopped_at_eos": stopped,
            "ablation": None if specs[i] is None else specs[i].to_dict(),
            "decoding": dec_dict,
        }
        if early_stop:  # rows of runs without early stop keep their fields
            row.update(stopped_early=stop_token is not None, stop_token=stop_token,
                       settled_for=list(decoding.stop_when_settled))
        return row

    return result


def _generate_refilling(run: _BatchRun, specs: list, batch_size: int, result: Callable, results: list,
                        finished: Callable) -> None:
    """One process with early stop: each group of prompts that can share a batch decodes with refill, and
    finished rows are handed to ``finished`` batch_size at a time, in the order they finish."""
    ready: list[dict] = []

    def on_row(i, new_ids, stop_token):
        results[i] = result(i, new_ids, stop_token)
        ready.append(results[i])
        if len(ready) >= batch_size:
            finished([(0, ready[:])])
            ready.clear()

    try:
        for members in _batches(specs, max(1, len(results))):
            run.generate_refilling(members, batch_size, on_row)
    finally:  # hand over what is finished, even when a later row fails
        if ready:
            finished([(0, ready)])
