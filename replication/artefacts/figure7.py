"""Figure 7: attention map of the top safety head with its query, key or value scaled by
5e-1, 1e-3, 1e-10. Scaling q or k flattens the softmax towards uniform over the causal prefix
(UA); scaling v leaves the map as it is and shrinks what the head writes (SC)."""

from __future__ import annotations

import warnings

from ..compute.stored import cached
from ..spec.artefact import ArtefactSpec, Output
from .common import top_group

PARTS = ("q", "k", "v")


def uniform_causal(T: int):
    import torch

    return torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]


def attention_maps(model, ids, head, conditions: dict) -> dict:
    """The head's attention probabilities ([T, T]) for the clean model and under each AblationSpec,
    from the eager kernel (the only one that returns them)."""
    import torch

    from safetyheads.ablation import GQAGroupWarning, ablate

    prev = model.config._attn_implementation
    model.set_attn_implementation("eager")
    maps = {}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", GQAGroupWarning)  # k scaling hits the KV group: said in the caption
            for name, spec in conditions.items():
                if spec is None:
                    att = model(input_ids=ids, output_attentions=True, use_cache=False).attentions
                else:
                    with ablate(model, spec):
                        att = model(input_ids=ids, output_attentions=True, use_cache=False).attentions
                maps[name] = att[head.layer][0, head.head].float().cpu()
    finally:
        model.set_attn_implementation(prev)
    return maps


def run(ctx) -> Output:
    import pandas as pd

    from safetyheads.ablation import AblationSpec
    from safetyheads.prompts import encode_prompt

    p = ctx.profile
    out = Output()
    head = top_group(ctx, "aligned", "ua", 1)[0]
    out.metric("head", [head], kind="heads", description="top-1 Sahara UA head")
    if ctx.plan_only:
        return out
    q = ctx.queries(p.attribution_set, "attribution")
    conds = {"clean": None}
    for part in PARTS:
        for s in p.attention_scales:
            method, target = ("ua", part) if part in ("q", "k") else ("sc", "v")
            conds[f"{part} x {s:g}"] = AblationSpec((head,), method, s, target)

    def compute():
        model, tok = ctx.model("aligned")
        ids = encode_prompt(tok, q.prompts[0], p.template).to(model.device)
        return {k: v.tolist() for k, v in attention_maps(model, ids, head, conds).items()}

    import torch

    maps = cached(ctx, "attention maps", {"model": ctx.model_id("aligned"), "queries": q.spec() | {"ids": q.ids[:1]},
                                          "template": p.template, "head": str(head),
                                          "conditions": {k: v and v.to_dict() for k, v in conds.items()}}, compute)
    maps = {k: torch.tensor(v) for k, v in maps.items()}
    n_tokens = maps["clean"].shape[0]
    uni = uniform_causal(maps["clean"].shape[0])
    rows = []
    for name, m in maps.items():
        dev_uniform = float((m - uni).abs().max())
        dev_clean = float((m - maps["clean"]).abs().max())
        rows.append({"condition": name, "max |A - uniform|": round(dev_uniform, 6), "max |A - clean|": round(dev_clean, 6)})
        key = name.replace(" x ", "_")
        out.metric(f"dev_uniform.{key}", dev_uniform, tolerance=1e-3, description=f"max deviation from uniform causal attention, {name}")
        if name != "clean":
            out.metric(f"dev_clean.{key}", dev_clean, tolerance=1e-3, description=f"max change from the clean map, {name}")
    out.tables.append((f"Attention of {head} on query 0 of {q.set} ({n_tokens} tokens)", pd.DataFrame(rows)))
    out.rows = rows + [{"head": str(head), "query": q.prompts[0], "tokens": n_tokens}]
    out.figures.append(("figure7", plot(maps, head)))
    return out


def plot(maps, head):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(maps)
    cols = 4
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.8 * rows))
    for ax in axes.flat:
        ax.axis("off")
    for ax, n in zip(axes.flat, names):
        ax.imshow(maps[n].numpy(), cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"{head}: {n}", fontsize=8)
    fig.tight_layout()
    return fig


FIGURE7 = ArtefactSpec(
    "figure7", "Figure 7: what scaling q, k, v does to attention",
    "Attention probabilities of the aligned model's top-1 UA head on one attribution query, clean and with "
    "the head's query, key or value scaled by 5e-1, 1e-3 and 1e-10. On a GQA model a key or value scaling "
    "hits every query head of the KV group.",
    "Figure 7", run, needs=("matplotlib",))
