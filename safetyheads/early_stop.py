"""Early stop: decoding step by step, where a row leaves the batch once its verdict is settled.

Opt-in (``DecodingSpec(stop_when_settled=(judge names...))``): a row stops as soon as its text's
verdict is settled for every named judge (``safetyheads.judges.Judge.settled``: a refusal match that
no continuation can undo), and leaves the batch (its KV-cache rows, mask and sampler go), so the
rest of the batch runs smaller. The remaining rows decode exactly as in a run without early stop
(a row's output does not depend on its batch), and a stopped row's tokens are the first tokens of
its full response, so the named judges give the same verdicts. ``generation.generate_responses``
is the front end.
"""

from __future__ import annotations

import inspect
from contextlib import ExitStack
from typing import Callable, ContextManager, Sequence

import torch

from .decoding import DecodingSpec, TopKRowSampler, left_pad
from .judges import get_judge, settled_for


def generate_settling(model, rows: Sequence[Sequence[int]], seeds: Sequence[int], decoding: DecodingSpec,
                      eos_ids: list[int], pad_id: int, settled: Callable[[list[int]], bool],
                      context: Callable[[list[int]], ContextManager], *, batch_size: int | None = None,
                      on_row: Callable[[int, list[int], int | None], None] | None = None,
                      ) -> tuple[list[list[int]], list[int | None]]:
    """``generation._generate_batch``'s decoding, step by step, where a row leaves the batch once it reaches
    EOS or ``settled(its new ids)`` holds. -> (new ids of each row, the EOS included; per row the
    number of new tokens at which it was stopped as settled, or None).

    At most ``batch_size`` rows (default: all) decode at once. Once half the batch has left, the
    waiting rows are prefilled (a batch of their own) and join the rows still decoding (refill), so a
    row that never settles does not run on alone while others wait. ``on_row(i, new ids, stop)`` is
    called as each row finishes.

    Each forward call gets what ``generate`` (transformers 5) passes, so that rows decode as they do
    there: the dynamic cache, position ids from the mask (``cumsum - 1``), the 2-D mask (None when
    nothing is padded), ``logits_to_keep=1`` where the model takes them. A token is chosen as there:
    argmax of the float32 last-position logits, after the top-k row sampler when sampling. Leaving
    rows are dropped from the ids, positions, mask, KV cache and the sampler's generators; the mask
    keeps its width, so no remaining row sees a different padding. Joining rows are left-padded to
    the longer of the two caches (their positions come from their own mask, so a row sees the same
    positions, keys and values as alone). ``context(rows)`` ablates the listed rows (indices into
    ``rows``) and is re-entered whenever the batch changes, since per-row ablations are laid out by
    batch position. tests/test_early_stop.py checks this loop against ``generate`` on every tiny
    model family, with and without refill.
    """
    batch_size = len(rows) if batch_size is None else max(1, batch_size)
    decoder = _Decoder(model, len(rows), seeds, decoding, eos_ids, settled, context, on_row)
    waiting = list(range(len(rows)))
    batch: _Batch | None = None  # the rows decoding, in batch order, and their state
    with torch.no_grad(), ExitStack() as ablation:
        while waiting or batch is not None:
            if waiting and (batch is None or len(batch.rows) <= batch_size // 2):
                free = batch_size - (len(batch.rows) if batch else 0)
                joining, waiting = waiting[:free], waiting[free:]
                prefilled = decoder.step(_Batch.prefill(model, [rows[r] for r in joining], joining, pad_id), ablation)
                if prefilled is not None:
                    batch = prefilled if batch is None else batch.join(prefilled)
                continue
            batch = decoder.step(batch, ablation)
    return decoder.new, decoder.stopped


class _Decoder:
    """``generate_settling``'s decoding state: each row's new ids and early-stop token count, the sampler,
    the forward call's arguments, and the rows the ablation context was entered for."""

    def __init__(self, model, n_rows: int, seeds: Sequence[int], decoding: DecodingSpec, eos_ids: list[int],
                 settled: Callable[[list[int]], bool], context: Callable[[list[int]], ContextManager],
                 on_row: Callable[[int, list[int], int | None], None] | None):
        self.model, self.decoding, self.eos_ids = model, decoding, eos_ids
        self.settled, self.context, self.on_row = settled, context, on_row
        self.takes = inspect.signature(model.forward).parameters
        # transformers 5.24 renamed forward's past_key_values to cache; an unknown name would vanish into
        # **kwargs and every step would decode without its context, so pass the one this version takes.
        self.cache_arg = "cache" if "cache" in self.takes else "past_key_values"
        self.extra = {"logits_to_keep": 1} if "logits_to_keep" in self.takes else {}
        self.sampler = TopKRowSampler(seeds, decoding.k, decoding.temperature) if decoding.sampling else None
        self.generators = self.sampler.generators if self.sampler else []
        self.new: list[list[int]] = [[] for _ in range(n_rows)]
        self.stopped: list[int | None] = [None] * n_rows
        self.ablated: list[int] = []  # the rows the ablation context was entered for, in batch order

    def step(self, b: _Batch, ablation: ExitStack) -> "_Batch | None":
        """One forward of ``b``; appends each row's token; -> the rows that go on (None: none)."""
        if b.rows != self.ablated:  # per-row ablations are laid out by batch position
            ablation.close()
            ablation.enter_context(self.context(b.rows))
            self.ablated[:] = b.rows
        if self.sampler:
            self.sampler.generators = [self.generators[r] for r in b.rows]
        mask = None if bool((b.mask == 1).all()) else b.mask  # generate drops an all-ones mask: so do we
        out = self.model(input_ids=b.ids, position_ids=b.positions if "position_ids" in self.takes else None,
                         attention_mask=mask, use_cache=True, return_dict=True, **{self.cache_arg: b.cache},
                         **self.extra)
        scores = out.logits[:, -1].to(copy=True, dtype=torch.float32)
        del out  # the prefill logits are [B, T, vocab]: do not keep them through the next step
        tokens = (self.sampler(b.ids, scores) if self.sampler else scores).argmax(dim=-1)
        keep = [pos for pos, (r, t) in enumerate(zip(b.rows, tokens.tolist())) if self._goes_on(r, t)]
        return b.select(keep, tokens) if keep else None

    def _goes_on(self, r: int, token: int) -> bool:
        """Append ``token`` to row r; False (and ``on_row`` called) when the row ends here."""
        new = self.new[r]
        new.append(token)
        last = len(new) == self.decoding.max_new_tokens  # the row ends here anyway: not "stopped early"
        if token not in self.eos_ids and not last:
            if not self.settled(new):
                return True
            self.stopped[r] = len(new)
        if self.on_row:
            self.on_row(r, new, self.stopped[r])
        return False


class _Batch:
    """The rows decoding together: their indices, the next input ids ``[B, 1]`` (the prompts at the
    prefill), the mask ``[B, W]`` (W = cache length + the ids' length), the position ids of the ids,
    and the KV cache."""

    def __init__(self, rows: list[int], ids, mask, positions, cache):
        self.rows, self.ids, self.mask, self.positions, self.cache = rows, ids, mask, positions, cache

    @classmethod
    def prefill(cls, model, prompts, rows: list[int], pad_id: int) -> "_Batch":
        from transformers import DynamicCache  # heavy: `import safetyheads` stays fast

        ids, mask = left_pad(prompts, pad_id)
        ids, mask = ids.to(model.device), mask.to(model.device)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        cache = DynamicCache(config=model.config.get_text_config(decoder=True))  # as generate builds it
        return cls(rows, ids, mask, positions, cache)

    def select(self, keep: list[int], tokens) -> "_Batch":
        """The rows at batch positions ``keep``, each fed its new token next."""
        if len(keep) < len(self.rows):
            index = torch.tensor(keep, device=self.ids.device)
            self.cache.batch_select_indices(index)
            tokens, mask, positions = tokens[index], self.mask[index], self.positions[index]
        else:
            mask, positions = self.mask, self.positions
        return _Batch([self.rows[p] for p in keep], tokens[:, None],
                      torch.cat([mask, mask.new_ones((len(keep), 1))], dim=-1), positions[:, -1:] + 1, self.cache)

    def join(self, other: "_Batch") -> "_Batch":
        """This batch and ``other`` as one (this one's rows first): the shorter cache and mask are padded
        on the left, where the mask hides them."""
        from transformers.cache_utils import DynamicLayer  # heavy: `import safetyheads` stays fast

        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            if not (type(mine) is type(theirs) is DynamicLayer and mine.is_initialized and theirs.is_initialized):
                raise TypeError(f"cannot merge {type(mine).__name__} cache layers (see can_refill)")
            mine.keys = torch.cat([_left_pad_seq(mine.keys, width - 1), _left_pad_seq(theirs.keys, width - 1)])
            mine.values = torch.cat([_left_pad_seq(mine.values, width - 1), _left_pad_seq(theirs.values, width - 1)])
        mask = torch.cat([_left_pad_mask(self.mask, width), _left_pad_mask(other.mask, width)])
        return _Batch(self.rows + other.rows, torch.cat([self.ids, other.ids]), mask,
                      torch.cat([self.positions, other.positions]), self.cache)


def _left_pad_seq(states, length: int):
    """``[B, H, T, D]`` states padded with zeros on the left of T to ``length``."""
    missing = length - states.shape[-2]
    return states if missing == 0 else torch.cat([states.new_zeros((*states.shape[:-2], missing, states.shape[-1])),
                                                  states], dim=-2)


def _left_pad_mask(mask, width: int):
    missing = width - mask.shape[1]
    return mask if missing == 0 else torch.cat([mask.new_zeros((mask.shape[0], missing)), mask], dim=-1)


def can_refill(model) -> bool:
    """True if this model's generation cache is made of plain ``DynamicLayer``s, the only layers whose
    rows ``_Batch.join`` knows how to merge (sliding-window layers keep a window, not the whole past)."""
    from transformers import DynamicCache  # heavy: `import safetyheads` stays fast
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    return all(type(layer) is DynamicLayer for layer in cache.layers)


def settle_check(tok, prefill: str | None, names: Sequence[str]) -> Callable[[list[int]], bool]:
    """``settled(new_ids)`` for ``generate_settling``: the decoded text is settled for every named judge
    (default settings). The text is checked both as ``prefill + response`` (what the replication
    judges) and as the response alone (what ``safetyheads judge`` reads from the ``response`` field)."""
    judges = [get_judge(n) for n in names]

    def settled(new_ids: list[int]) -> bool:
        response = tok.decode(new_ids, skip_special_tokens=True)  # exactly as run_batch decodes the row
        texts = {(prefill or "") + response, response}
        return all(settled_for(judges, t) for t in texts)

    return settled
