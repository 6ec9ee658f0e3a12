"""The clean pass and prefix reuse: the engine that Ships and Sahara sweep heads with.

Ablating a head in layer l cannot change layers < l. So one clean pass of a prompt keeps every
decoder layer's input (and the arguments it was called with), and a batch of rows, row r ablating
its own head, starts each row at its own layer: rows are ordered by layer and join the running
batch when it reaches their layer ("staircase"), so each layer runs once per chunk of rows.
Ships (``ships.py``) turns the rows' last-position logits into KL divergences; Sahara
(``sahara.py``) reads their post-final-norm states, with its chosen group ablated in every row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .ablation import AblationSpec, RowEditor, layer_edit_for, n_units, unit_of
from .arch import decoder_layers, final_norm_module
from .heads import HeadRef

DEFAULT_BATCH_SIZE = 96  # rows (ablated heads) per forward pass of a sweep


@dataclass
class CleanPass:
    """The unablated run of one prompt: last-position logits and every decoder layer's call."""

    logits: torch.Tensor  # [vocab]
    layer_calls: list  # per layer: (args, kwargs) it was called with; args[0]/hidden_states = its input
    last_state: torch.Tensor  # [d]: final-norm output at the last position (generalized Ships' activations)


def _layer_input(call) -> torch.Tensor:
    args, kwargs = call
    return args[0] if args else kwargs["hidden_states"]


@torch.no_grad()
def clean_pass(model, input_ids: torch.Tensor) -> CleanPass:
    layers = decoder_layers(model)
    calls: list = [None] * len(layers)

    def keeper(i):
        def pre_hook(module, args, kwargs):
            calls[i] = (args, kwargs)

        return pre_hook

    final: list = []
    handles = [layer.register_forward_pre_hook(keeper(i), with_kwargs=True) for i, layer in enumerate(layers)]
    handles.append(final_norm_module(model).register_forward_hook(
        lambda module, args, output: final.append(output[0, -1])))
    try:
        out = model(input_ids=input_ids.to(model.device), use_cache=False, logits_to_keep=1)
    finally:
        for h in handles:
            h.remove()
    return CleanPass(out.logits[0, -1], calls, final[-1])


def _call_layer(layer, call, hidden: torch.Tensor) -> torch.Tensor:
    args, kwargs = call
    if args:
        out = layer(hidden, *args[1:], **kwargs)
    else:
        out = layer(**{**kwargs, "hidden_states": hidden})
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def staircase_last_hidden(
    model,
    clean: CleanPass,
    rows: Sequence[HeadRef],
    editor: RowEditor,
    spec: AblationSpec,
    fixed: dict[int, list[int]] | None = None,
) -> torch.Tensor:
    """Last-position output of the last decoder layer (before the final norm), row r ablating ``rows[r]``.

    ``rows`` must be sorted by layer; each starts from ``clean``'s input to its own layer.
    ``fixed`` maps layer -> units ablated in every row on top of the row's own head (Sahara's
    chosen group); ``clean`` must then come from a pass with that group already ablated.
    """
    g = editor.geom
    units = n_units(g, spec.target)
    fixed = fixed or {}
    layers = decoder_layers(model)
    hidden = None
    try:
        for layer in range(rows[0].layer, g.n_layers):
            joining = sum(1 for r in rows if r.layer == layer)
            if joining:
                fresh = _layer_input(clean.layer_calls[layer]).expand(joining, -1, -1)
                hidden = fresh if hidden is None else torch.cat([hidden, fresh])
            alive = rows[: hidden.shape[0]]
            base = fixed.get(layer, [])
            if joining or base:
                per_row = [base + ([unit_of(g, r.head, spec.target)] if r.layer == layer else []) for r in alive]
                editor.edits = {layer: layer_edit_for(per_row, units, spec.method, spec.eps)}
            else:
                editor.edits = {}
            hidden = _call_layer(layers[layer], clean.layer_calls[layer], hidden)
    finally:
        editor.edits = {}
    return hidden[:, -1]
