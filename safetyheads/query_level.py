"""The paper's query-level protocol as a job: each prompt's own top-k Ships heads (scored on that prompt)
ablated while that prompt is answered, one row per prompt naming its heads. Its spec checks and resuming
are the jobs' (``safetyheads.jobs``); it is its own module because it combines a Ships job and a
generation job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from tqdm.auto import tqdm

from . import generation, ships
from .ablation import AblationSpec
from .distributed import is_main, world_size
from .generation import DecodingSpec
from .heads import HeadRef, parse_heads
from .jobs import (
    JobError, OneResponsePerPrompt, at_least, check_generation, check_prompts,
    resolve_ablation_settings, with_candidates_named,
)
from .ships import DEFAULT_BATCH_SIZE, STRATEGIES, check_prob_floor
from .sinks import Sink, resumed


@dataclass(frozen=True)
class QueryLevelJob(OneResponsePerPrompt):
    """For each prompt: Ships of every candidate head on that prompt (in its ``template`` and
    ``system_prompt``, with ``method``, ``eps`` and ``target``, as ``ShipsJob``), its own top-``k``
    heads (``ships.own_top_heads``: best first, ties in head order), then its response generated
    with those heads ablated by the same method (as ``GenerateJob``). Ships is scored on the
    formatted prompt without the prefill, as in the paper (the prefill is part of the answer).

    Rows: ``generate_responses``' result dicts, plus ``ships_heads`` (the prompt's k heads, best
    first; its ``ablation`` names the same heads) and ``ships_scores`` (their Ships). Prompts are
    done ``batch_size`` at a time (times the processes under ``accelerate launch``): their Ships,
    then their responses in one batch, then their rows are saved; a killed run loses at most that
    batch and a rerun computes only the prompts without a row."""

    prompts: tuple[str, ...]
    prompt_ids: tuple | None = None
    k: int = 1  # heads ablated per prompt
    candidates: tuple[HeadRef, ...] | None = None  # heads Ships ranks (None: every head of the model)
    method: str = "ua"
    eps: float = 1e-5
    target: str | None = None
    template: str = "paper"
    system_prompt: str | None = None
    prefill: str | None = None
    decoding: DecodingSpec = DecodingSpec()
    batch_size: int = 8  # prompts per generation batch
    ships_batch_size: int = DEFAULT_BATCH_SIZE  # ablated rows per Ships pass
    strategy: str = "prefix"
    prob_floor: float = 0.0

    def __post_init__(self) -> None:
        check_prompts(self)
        at_least(self, "k", 1)
        if self.candidates is not None:
            object.__setattr__(self, "candidates", parse_heads(self.candidates))
            self.check_enough_candidates()
        resolve_ablation_settings(self)
        check_generation(self)
        at_least(self, "ships_batch_size", 1)
        if self.strategy not in STRATEGIES:
            raise JobError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        object.__setattr__(self, "prob_floor", check_prob_floor(self.prob_floor))

    def check_enough_candidates(self) -> None:
        if len(self.candidates) < self.k:
            raise JobError(f"k = {self.k} heads per prompt needs at least {self.k} candidate heads, "
                           f"got {len(self.candidates)}")

    @property
    def ids(self) -> tuple:
        return self.prompt_ids if self.prompt_ids is not None else tuple(range(len(self.prompts)))

    def for_model(self, model) -> "QueryLevelJob":
        """This job with its candidates named (every head of ``model`` when None) and checked against the model."""
        return with_candidates_named(self, model)


    def responses(self, model, tok, *, only: Iterable | None = None, on_rows: Callable[[list[dict]], None] | None = None,
                  progress: bool = False) -> list[dict]:
        """The rows of the prompts ``only`` names (default: every prompt), in prompt order, without a
        sink; ``on_rows(rows)`` is called as each batch of prompts is done."""
        job = self if self.candidates is not None else self.for_model(model)
        wanted = None if only is None else {str(pid) for pid in only}
        index = [i for i, pid in enumerate(job.ids) if wanted is None or str(pid) in wanted]
        step = job.batch_size * world_size()  # under `accelerate launch`: a batch of prompts per process
        out: list[dict] = []
        bar = tqdm(total=len(index), unit="prompt", desc="own top heads", disable=not (progress and is_main()))
        try:
            for start in range(0, len(index), step):
                chunk = index[start:start + step]
                rows = job._responses(model, tok, chunk)
                if on_rows:
                    on_rows(rows)
                out.extend(rows)
                bar.update(len(chunk))
        finally:
            bar.close()
        return out

    def _responses(self, model, tok, index: list[int]) -> list[dict]:
        """The rows of the prompts at ``index``: their Ships, their own top-k heads, their responses."""
        prompts, ids = [self.prompts[i] for i in index], [self.ids[i] for i in index]
        table = ships.ships_scores(model, tok, prompts, self.candidates, self.method, self.eps, self.template,
                                   target=self.target, system_prompt=self.system_prompt, strategy=self.strategy,
                                   batch_size=self.ships_batch_size, prob_floor=self.prob_floor, prompt_ids=ids)
        tops = ships.own_top_heads(table, self.k)
        ranked = [tops[pid] for pid in ids]
        ablation = [AblationSpec(tuple(h for h, _ in top), self.method, self.eps, self.target) for top in ranked]
        rows = generation.generate_responses(model, tok, prompts, template=self.template,
                                             system_prompt=self.system_prompt, ablation=ablation,
                                             decoding=self.decoding, prefill=self.prefill,
                                             batch_size=self.batch_size, prompt_ids=ids)
        return [{**row, "ships_heads": [str(h) for h, _ in top], "ships_scores": [s for _, s in top]}
                for row, top in zip(rows, ranked)]

    def run(self, model, tok, sink: Sink | None, *, finished: set[str] | None = None,
            shape: Callable[[dict], dict] | None = None, progress: bool = False) -> dict | None:
        """Answer the prompts not ``finished`` (default: what ``sink`` holds) into ``sink`` and finish
        it with ``{"rows"}`` in prompt order. ``sink`` None (or a ``MainProcessRows``): compute
        only (a process of an ``accelerate launch`` other than the main one, given the main one's ``finished``)."""
        job = self if self.candidates is not None else self.for_model(model)
        finished, sink = resumed(job, sink, finished, set())
        todo = job.todo(finished)
        if todo:
            save = None if sink is None else (lambda rows: sink.append([shape(r) for r in rows] if shape else rows))
            job.responses(model, tok, only=todo, on_rows=save, progress=progress)
        if sink is None:
            return None
        got = {str(r["prompt_id"]): r for r in sink.rows()}
        return sink.finish({"rows": [got[str(pid)] for pid in job.ids]})
