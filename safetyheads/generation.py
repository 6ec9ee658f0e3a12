"""Text generation, plain or under a head ablation, batched and reproducible.

``generate_responses`` formats each query with a paper template (``safetyheads.prompts``),
optionally appends a prefill (``"Sure, here is"``) that the model then continues, left-pads a
batch, and runs ``model.generate`` inside ``safetyheads.ablate``. Prompts may carry different
ablations (Ships' top heads differ per query): prompts with the same spec share batches.

Decoding follows the paper (../shared/paper/FACTS.md, "Generation and judging"): greedy, or
top-k sampling (multinomial over the renormalised top-k at temperature T), 128 new tokens, stop
at EOS. Sampling draws from one ``torch.Generator`` per prompt, seeded from ``(seed, prompt_id)``
on the CPU, so a prompt's response does not depend on the batch it lands in, the batch size, the
device's RNG, or which prompts a resumed run still has to do.

Left padding is exact: transformers derives the position ids from the attention mask
(``cumsum - 1``), so a padded row sees the positions, keys and values it would see alone
(tested on tiny models of every family, and on the embedded model).
"""

from __future__ import annotations

import hashlib
import math
import operator
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .ablation import AblationSpec, GQAGroupWarning, ablate, ablate_rows, row_family
from .batching import BatchSizeWarning, is_oom
from .errors import AblationError, DataError, SafetyheadsError
from .prompts import format_prompt

MODES = ("greedy", "topk")


@dataclass(frozen=True)
class DecodingSpec:
    """How to decode. ``greedy`` ignores ``k``, ``temperature`` and ``seed``; ``topk`` samples from
    the ``k`` most likely tokens, renormalised, at ``temperature`` (the paper: k=5, T=1)."""

    mode: str = "greedy"
    k: int = 5
    temperature: float = 1.0
    max_new_tokens: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SafetyheadsError(f"unknown decoding {self.mode!r}: choose greedy or topk")
        object.__setattr__(self, "k", _int_at_least(self.k, 1, "k (top-k)"))
        object.__setattr__(self, "max_new_tokens", _int_at_least(self.max_new_tokens, 1, "max_new_tokens"))
        object.__setattr__(self, "seed", _int_at_least(self.seed, 0, "seed"))
        try:
            temperature = float(self.temperature)
        except (TypeError, ValueError):
            raise SafetyheadsError(f"temperature must be a number, got {self.temperature!r}") from None
        if self.mode == "topk" and not (0 < temperature < math.inf):
            raise SafetyheadsError(
                f"temperature must be a finite number > 0 for top-k sampling, got {self.temperature!r} "
                "(for deterministic output use greedy decoding)"
            )
        object.__setattr__(self, "temperature", temperature)

    @property
    def sampling(self) -> bool:
        return self.mode == "topk"

    def to_dict(self) -> dict:
        """What determines the output: greedy records None for k, temperature and seed (unused)."""
        s = self.sampling
        return {
            "mode": self.mode,
            "k": self.k if s else None,
            "temperature": self.temperature if s else None,
            "top_p": 1.0 if s else None,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed if s else None,
            "stop": "eos",
        }

    @classmethod
    def from_dict(cls, d: dict) -> "DecodingSpec":
        defaults = cls()
        return cls(
            mode=d["mode"],
            k=defaults.k if d.get("k") is None else d["k"],
            temperature=defaults.temperature if d.get("temperature") is None else d["temperature"],
            max_new_tokens=d["max_new_tokens"],
            seed=defaults.seed if d.get("seed") is None else d["seed"],
        )


def _int_at_least(value, lowest: int, name: str) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        n = operator.index(value)
    except TypeError:
        raise SafetyheadsError(f"{name} must be an integer >= {lowest}, got {value!r}") from None
    if n < lowest:
        raise SafetyheadsError(f"{name} must be an integer >= {lowest}, got {value!r}")
    return n


# --------------------------------------------------------------------------------------------
# Prompts


def generation_text(tok, query: str, template: str = "paper", system_prompt: str | None = None,
                    prefill: str | None = None) -> str:
    """The text the model continues: the formatted query, then ``prefill`` verbatim (no space added)."""
    if not isinstance(query, str) or not query.strip():
        raise DataError("empty prompt: every query must contain text")
    return format_prompt(tok, query, template, system_prompt) + (prefill or "")


def encode_for_generation(tok, query: str, template: str = "paper", system_prompt: str | None = None,
                          prefill: str | None = None) -> list[int]:
    """Token ids of ``generation_text``. As in ``encode_prompt``: chat-rendered text already holds
    its special tokens; ``direct``/``paper`` get the tokenizer's defaults (BOS for Llama-2)."""
    text = generation_text(tok, query, template, system_prompt, prefill)
    ids = tok(text, add_special_tokens=(template != "chat")).input_ids
    if not ids:
        raise DataError(f"prompt {query[:40]!r} tokenises to nothing")
    return list(ids)


def eos_token_ids(model, tok) -> list[int]:
    """Every id that ends a response: the tokenizer's EOS and the model's generation-config EOS
    (chat models often stop on an end-of-turn token listed only there)."""
    ids: list[int] = []
    for source in (tok.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        for i in source if isinstance(source, (list, tuple)) else [source]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    if not ids:
        raise DataError("the tokenizer has no EOS token and the model's generation config names none: cannot stop at EOS")
    return ids


def pad_token_id(tok, eos_ids: list[int]) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else eos_ids[0]


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, each ``[B, T_max]``, padded on the left."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids, mask


# --------------------------------------------------------------------------------------------
# Sampling


def row_seed(seed: int, prompt_id) -> int:
    """The seed of one prompt's generator: a hash of the run seed and the prompt id."""
    digest = hashlib.sha256(f"safetyheads-generate:{seed}:{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class TopKRowSampler:
    """Logits processor that draws each row's next token from its own CPU generator.

    Top-k of the logits, softmax at ``temperature`` in float64 (= the renormalised top-k of the
    tempered distribution), one ``torch.multinomial`` draw per row. Returns scores that are 0 at
    the drawn token and -inf elsewhere, so greedy ``generate`` picks exactly that token.
    Every row draws at every step, finished or not, so a row's draws depend only on its seed.
    """

    def __init__(self, seeds: Sequence[int], k: int, temperature: float):
        self.generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        self.k, self.temperature = k, temperature

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        k = min(self.k, scores.shape[-1])
        values, index = scores.topk(k, dim=-1)
        probs = torch.softmax(values.detach().to("cpu", torch.float64) / self.temperature, dim=-1)
        picks = torch.stack([torch.multinomial(probs[r], 1, generator=g) for r, g in enumerate(self.generators)])
        tokens = index.gather(-1, picks.to(index.device))
        out = torch.full_like(scores, -math.inf)
        return out.scatter_(-1, tokens, 0.0)


@contextmanager
def _plain_generation_config(model):
    """Hide the checkpoint's generation_config.json during ``generate``: transformers fills every
    unset field from it (repetition_penalty, suppress_tokens, ...), which would silently change
    the decoding that DecodingSpec describes."""
    from transformers import GenerationConfig

    saved = getattr(model, "generation_config", None)
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved


# --------------------------------------------------------------------------------------------
# Generation


def _generate_batch(model, rows: Sequence[Sequence[int]], seeds: Sequence[int], decoding: DecodingSpec,
                    eos_ids: list[int], pad_id: int) -> list[list[int]]:
    """New token ids of each row (up to max_new_tokens; finished rows are padded by transformers)."""
    from transformers import GenerationConfig, LogitsProcessorList

    input_ids, attention_mask = left_pad(rows, pad_id)
    device = model.device
    config = GenerationConfig(
        max_new_tokens=decoding.max_new_tokens, do_sample=False, num_beams=1,
        eos_token_id=eos_ids, pad_token_id=pad_id, use_cache=True,
    )
    processors = LogitsProcessorList(
        [TopKRowSampler(seeds, decoding.k, decoding.temperature)] if decoding.sampling else []
    )
    with torch.no_grad(), _plain_generation_config(model):
        out = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                             generation_config=config, logits_processor=processors)
    return out[:, input_ids.shape[1]:].cpu().tolist()


def _finish(new_ids: list[int], eos_ids: list[int]) -> tuple[list[int], int, bool]:
    """(text tokens, n_new_tokens counting the EOS, stopped_at_eos)."""
    for i, t in enumerate(new_ids):
        if t in eos_ids:
            return new_ids[:i], i + 1, True
    return new_ids, len(new_ids), False


def _per_prompt_ablation(ablation, n: int) -> list[AblationSpec | None]:
    if ablation is None or isinstance(ablation, AblationSpec):
        return [ablation] * n
    if isinstance(ablation, (list, tuple)):
        specs = list(ablation)
        if len(specs) != n:
            raise AblationError(f"got {len(specs)} ablations for {n} prompts: give one per prompt (None = no ablation)")
        for s in specs:
            if s is not None and not isinstance(s, AblationSpec):
                raise AblationError(f"per-prompt ablations must be AblationSpec or None, got {type(s).__name__}")
        return specs
    raise AblationError(
        f"ablation must be None, an AblationSpec, or a list of them (one per prompt), got {type(ablation).__name__}"
    )


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
    ``decoding`` (``decoding.to_dict()``).
    """
    from tqdm.auto import tqdm

    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not isinstance(decoding, DecodingSpec):
        raise SafetyheadsError(f"decoding must be a DecodingSpec, got {type(decoding).__name__}")
    batch_size = _int_at_least(batch_size, 1, "batch_size")
    if prefill is not None and not isinstance(prefill, str):
        raise DataError(f"prefill must be a string, got {type(prefill).__name__}")
    prefill = prefill or None
    prompt_ids = list(range(len(prompts))) if prompt_ids is None else list(prompt_ids)
    if len(prompt_ids) != len(prompts):
        raise DataError(f"got {len(prompt_ids)} prompt_ids for {len(prompts)} prompts: give one per prompt")
    specs = _per_prompt_ablation(ablation, len(prompts))
    for spec in dict.fromkeys(s for s in specs if s is not None):
        spec.check(model, stacklevel=3)  # fail (or warn about GQA) before any compute
    encoded = [encode_for_generation(tok, p, template, system_prompt, prefill) for p in prompts]
    eos_ids = eos_token_ids(model, tok)
    pad_id = pad_token_id(tok, eos_ids)
    dec_dict = decoding.to_dict()

    # Batches: prompts whose specs share method, eps and target (each row ablating its own heads),
    # groups in order of first appearance, prompts in input order (with a single spec, on_batch sees
    # the prompts in order; a row's output does not depend on its batch).
    groups: dict = {}
    for i, spec in enumerate(specs):
        groups.setdefault(row_family(spec), []).append(i)
    batches = [(members[s:s + batch_size]) for members in groups.values() for s in range(0, len(members), batch_size)]

    from .distributed import is_main, sharded_map

    results: list[dict | None] = [None] * len(prompts)
    bar = tqdm(total=len(prompts), unit="prompt", desc="generate", disable=not (progress and is_main()))

    # Under `accelerate launch` the batches are dealt over the processes (a batch = a unit computed as
    # alone); on_batch runs on the main process, in batch order, as each round is gathered.
    def generate_fitting(members) -> list[list[int]]:
        """New ids of a batch; a batch that runs out of memory is split in two (rows do not depend on
        their batch, so the output is the same)."""
        seeds = [row_seed(decoding.seed, prompt_ids[i]) for i in members]
        row_specs = [specs[i] for i in members]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", GQAGroupWarning)  # already raised once, by the check above
                if len(set(row_specs)) == 1:
                    context = ablate(model, row_specs[0]) if row_specs[0] is not None else nullcontext()
                else:
                    context = ablate_rows(model, row_specs)
                with context:
                    return _generate_batch(model, [encoded[i] for i in members], seeds, decoding, eos_ids, pad_id)
        except Exception as e:  # noqa: BLE001 - only out-of-memory is handled
            if not is_oom(e) or len(members) == 1:
                raise
        half = len(members) // 2
        warnings.warn(f"out of memory generating a batch of {len(members)}: split in two", BatchSizeWarning, stacklevel=2)
        return generate_fitting(members[:half]) + generate_fitting(members[half:])

    def run_batch(members):
        new = generate_fitting(members)
        done = []
        for i, new_ids in zip(members, new):
            spec = specs[i]
            text_ids, n_new, stopped = _finish(new_ids, eos_ids)
            done.append({
                "prompt_id": prompt_ids[i],
                "prompt": prompts[i],
                "template": template,
                "prefill": prefill,
                "response": tok.decode(text_ids, skip_special_tokens=True),
                "n_new_tokens": n_new,
                "stopped_at_eos": stopped,
                "ablation": None if spec is None else spec.to_dict(),
                "decoding": dec_dict,
            })
        return done

    def finished(rounds):
        for _, done in rounds:
            if on_batch:
                on_batch(done)
            bar.update(len(done))

    try:
        for members, done in zip(batches, sharded_map(run_batch, batches, on_round=finished)):
            for i, row in zip(members, done):
                results[i] = row
    finally:
        bar.close()
    return results
