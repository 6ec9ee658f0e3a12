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
                      context: Callable[[list[int]], ContextManager]) -> tuple[list[list[int]], list[int | None]]:
    """``generation._generate_batch``'s decoding, step by step, where a row leaves the batch once it reaches
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
    from transformers import DynamicCache  # heavy: `import safetyheads` stays fast

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
