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

Early stop (opt-in, ``DecodingSpec(stop_when_settled=(judge names...))``): a row stops as soon as
its text's verdict is settled for every named judge (``safetyheads.judges.Judge.settled``: a
refusal match that no continuation can undo), and leaves the batch (its KV-cache rows, mask and
sampler go), so the rest of the batch runs smaller. The remaining rows decode exactly as in a run
without early stop (a row's output does not depend on its batch, as above), and a stopped row's
tokens are the first tokens of its full response, so the named judges give the same verdicts.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import operator
import warnings
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, ContextManager, Sequence

import torch

from .ablation import AblationSpec, GQAGroupWarning, ablate, ablate_rows, row_family
from .batching import BatchSizeWarning, is_oom
from .errors import AblationError, DataError, SafetyheadsError
from .judges import JUDGES, get_judge, settled_for
from .prompts import format_prompt

MODES = ("greedy", "topk")


@dataclass(frozen=True)
class DecodingSpec:
    """How to decode. ``greedy`` ignores ``k``, ``temperature`` and ``seed``; ``topk`` samples from
    the ``k`` most likely tokens, renormalised, at ``temperature`` (the paper: k=5, T=1).
    ``stop_when_settled``: judge names; a row stops once its verdict is settled for all of them
    (empty: off; kept sorted, so equal sets are equal specs)."""

    mode: str = "greedy"
    k: int = 5
    temperature: float = 1.0
    max_new_tokens: int = 128
    seed: int = 0
    stop_when_settled: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SafetyheadsError(f"unknown decoding {self.mode!r}: choose greedy or topk")
        object.__setattr__(self, "stop_when_settled", _judge_names(self.stop_when_settled))
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
        """What determines the output: greedy records None for k, temperature and seed (unused).
        ``stop_when_settled`` appears only when set, so runs without it keep their store keys."""
        s = self.sampling
        out = {
            "mode": self.mode,
            "k": self.k if s else None,
            "temperature": self.temperature if s else None,
            "top_p": 1.0 if s else None,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed if s else None,
            "stop": "eos",
        }
        if self.stop_when_settled:
            out["stop_when_settled"] = list(self.stop_when_settled)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "DecodingSpec":
        defaults = cls()
        return cls(
            mode=d["mode"],
            k=defaults.k if d.get("k") is None else d["k"],
            temperature=defaults.temperature if d.get("temperature") is None else d["temperature"],
            max_new_tokens=d["max_new_tokens"],
            seed=defaults.seed if d.get("seed") is None else d["seed"],
            stop_when_settled=tuple(d.get("stop_when_settled") or ()),
        )


def _judge_names(names) -> tuple[str, ...]:
    """``stop_when_settled`` checked and made canonical: known judge names, sorted, no repeats."""
    if isinstance(names, str):
        names = (names,)
    try:
        names = tuple(names)
    except TypeError:
        raise SafetyheadsError(f"stop_when_settled must be a list of judge names, got {names!r}") from None
    unknown = [n for n in names if not isinstance(n, str) or n not in JUDGES]
    if unknown:
        raise SafetyheadsError(f"stop_when_settled: unknown judge {unknown[0]!r}: choose from {', '.join(JUDGES)}")
    return tuple(sorted(set(names)))


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


def _generate_settling(model, rows: Sequence[Sequence[int]], seeds: Sequence[int], decoding: DecodingSpec,
                       eos_ids: list[int], pad_id: int, settled: Callable[[list[int]], bool],
                       context: Callable[[list[int]], ContextManager]) -> tuple[list[list[int]], list[int | None]]:
    """``_generate_batch``'s decoding, step by step, where a row leaves the batch once it reaches
    EOS or ``settled(its new ids)`` holds. -> (new ids of each row, the EOS included; per row the
    number of new tokens at which it was stopped as settled, or None).

    Each forward call gets what ``generate`` (transformers 5) passes, so that the rows staying
    decode bit for bit as they do there: the dynamic cache, position ids from the mask
    (``cumsum - 1``), the 2-D mask (None when nothing is padded), ``logits_to_keep=1`` where the
    model takes them. A token is chosen as there: argmax of the float32 last-position logits, after
    the top-k row sampler when sampling. Leaving rows are dropped from the ids, positions, mask, KV
    cache and the sampler's generators; the mask keeps its width, so no remaining row sees a
    different padding. ``context(rows)`` ablates the listed rows (indices into ``rows``) and is
    re-entered whenever the batch shrinks, since per-row ablations are laid out by batch position.
    tests/test_early_stop.py checks this loop against ``generate`` on every tiny model family.
    """
    from transformers import DynamicCache

    input_ids, attention_mask = left_pad(rows, pad_id)
    device = model.device
    step_ids, mask = input_ids.to(device), attention_mask.to(device)
    takes = inspect.signature(model.forward).parameters
    # transformers 5.24 renamed forward's past_key_values to cache; an unknown name would vanish into
    # **kwargs and every step would decode without its context, so pass the one this version takes.
    cache_arg = "cache" if "cache" in takes else "past_key_values"
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0) if "position_ids" in takes else None
    extra = {"logits_to_keep": 1} if "logits_to_keep" in takes else {}
    if bool((mask == 1).all()):
        mask = None  # generate drops an all-ones mask (another attention path): so do we
    cache = DynamicCache(config=model.config.get_text_config(decoder=True))  # as generate builds it
    sampler = TopKRowSampler(seeds, decoding.k, decoding.temperature) if decoding.sampling else None
    alive = list(range(len(rows)))
    new: list[list[int]] = [[] for _ in rows]
    stopped: list[int | None] = [None] * len(rows)
    with torch.no_grad(), ExitStack() as ablation:
        ablation.enter_context(context(alive))
        for step in range(decoding.max_new_tokens):
            out = model(input_ids=step_ids, position_ids=positions, attention_mask=mask, use_cache=True,
                        return_dict=True, **{cache_arg: cache}, **extra)
            scores = out.logits[:, -1].to(copy=True, dtype=torch.float32)
            del out  # the prefill logits are [B, T, vocab]: do not keep them through the next step
            tokens = (sampler(step_ids, scores) if sampler else scores).argmax(dim=-1)
            last = step == decoding.max_new_tokens - 1  # the row ends here anyway: not "stopped early"
            keep = []
            for pos, (r, t) in enumerate(zip(alive, tokens.tolist())):
                new[r].append(t)
                if t in eos_ids or last:
                    continue
                if settled(new[r]):
                    stopped[r] = len(new[r])
                    continue
                keep.append(pos)
            if not keep:
                break
            if len(keep) < len(alive):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                tokens = tokens[index]
                mask = None if mask is None else mask[index]
                positions = None if positions is None else positions[index]
                alive = [alive[p] for p in keep]
                if sampler:
                    sampler.generators = [sampler.generators[p] for p in keep]
                ablation.close()
                ablation.enter_context(context(alive))
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones((len(alive), 1))], dim=-1)
            if positions is not None:
                positions = positions[:, -1:] + 1
            step_ids = tokens[:, None]
    return new, stopped


def _settle_check(tok, prefill: str | None, names: Sequence[str]) -> Callable[[list[int]], bool]:
    """``settled(new_ids)`` for ``_generate_settling``: the decoded text is settled for every named judge
    (default settings). The text is checked both as ``prefill + response`` (what the replication
    judges) and as the response alone (what ``safetyheads judge`` reads from the ``response`` field)."""
    judges = [get_judge(n) for n in names]

    def settled(new_ids: list[int]) -> bool:
        response = tok.decode(new_ids, skip_special_tokens=True)  # exactly as run_batch decodes the row
        texts = {(prefill or "") + response, response}
        return all(settled_for(judges, t) for t in texts)

    return settled


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
    ``decoding`` (``decoding.to_dict()``). With ``decoding.stop_when_settled`` also
    ``stopped_early`` (cut once settled, before EOS and the token limit), ``stop_token`` (its
    ``n_new_tokens`` then, else None) and ``settled_for`` (the judge names); judge such rows only
    with those judges (``safetyheads.judges.check_rejudge``).
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
    settled = _settle_check(tok, prefill, decoding.stop_when_settled) if decoding.stop_when_settled else None

    def generate_fitting(members) -> list[tuple[list[int], int | None]]:
        """(new ids, early-stop token count or None) of each row of a batch; a batch that runs out of
        memory is split in two (rows do not depend on their batch, so the output is the same)."""
        seeds = [row_seed(decoding.seed, prompt_ids[i]) for i in members]
        rows = [encoded[i] for i in members]

        def context(batch_rows: list[int]) -> ContextManager:
            row_specs = [specs[members[r]] for r in batch_rows]
            if len(set(row_specs)) == 1:
                return ablate(model, row_specs[0]) if row_specs[0] is not None else nullcontext()
            return ablate_rows(model, row_specs)

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", GQAGroupWarning)  # already raised once, by the check above
                if settled is not None:
                    new, stops = _generate_settling(model, rows, seeds, decoding, eos_ids, pad_id, settled, context)
                    return list(zip(new, stops))
                with context(list(range(len(members)))):
                    return [(ids, None) for ids in _generate_batch(model, rows, seeds, decoding, eos_ids, pad_id)]
        except Exception as e:  # noqa: BLE001 - only out-of-memory is handled
            if not is_oom(e) or len(members) == 1:
                raise
        half = len(members) // 2
        warnings.warn(f"out of memory generating a batch of {len(members)}: split in two", BatchSizeWarning, stacklevel=2)
        return generate_fitting(members[:half]) + generate_fitting(members[half:])

    def run_batch(members):
        new = generate_fitting(members)
        done = []
        for i, (new_ids, stop_token) in zip(members, new):
            spec = specs[i]
            text_ids, n_new, stopped = _finish(new_ids, eos_ids)
            row = {
                "prompt_id": prompt_ids[i],
                "prompt": prompts[i],
                "template": template,
                "prefill": prefill,
                "response": tok.decode(text_ids, skip_special_tokens=True),
                "n_new_tokens": n_new,
                "stopped_at_eos": stopped,
                "ablation": None if spec is None else spec.to_dict(),
                "decoding": dec_dict,
            }
            if settled is not None:  # rows of runs without early stop keep their fields
                row.update(stopped_early=stop_token is not None, stop_token=stop_token,
                           settled_for=list(decoding.stop_when_settled))
            done.append(row)
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
