"""Head ablations as forward hooks on the stock transformers modules.

The hooks sit where the per-head values are plain tensors: the output of the query/key/value
projection (or of the per-head q/k norm in qk-norm families), and the input of the output
projection. Nothing of the modeling code is copied, so eager, sdpa and any other attention
kernel, GQA, KV caching and ``generate`` all see the ablated values.

Methods (the paper's names, see ``docs/paper.md``):

* ``ua``   Undifferentiated Attention: the head's query (or key) times ``eps``; its softmax
           becomes uniform over the causal prefix.
* ``sc``   Scaling Contribution: the head's output (or value) times ``eps``.
* ``mean`` the head's q/k/v/output replaced by the mean over the layer's heads at that position.
* ``zero`` the head's q/k/v/output times 0.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch

from .arch import Geometry, Site, geometry, get_arch, site_module
from .errors import AblationError
from .heads import HeadRef, parse_heads
from .specs import JsonSpec

METHODS = ("ua", "sc", "mean", "zero")
TARGETS = ("q", "k", "v", "out")
DEFAULT_TARGET = {"ua": "q", "sc": "out", "mean": "q", "zero": "out"}
# UA is defined through the attention scores (q or k), SC through what the head writes (v or out).
ALLOWED_TARGETS = {"ua": ("q", "k"), "sc": ("v", "out"), "mean": TARGETS, "zero": TARGETS}


class GQAGroupWarning(UserWarning):
    """A k/v ablation on a GQA model also hits the other query heads of the KV group."""


def method_settings(method: str, eps, target: "str | None" = None) -> tuple[float, str]:
    """``(eps, target)`` of an ablation by ``method``, checked and made canonical (the method's
    default target when None; 0 for ``zero``): what ``AblationSpec`` holds besides its heads, so a
    spec whose heads are known only once the model loads is checked before it loads."""
    if method not in METHODS:
        raise AblationError(f"unknown ablation method {method!r}: choose one of {', '.join(METHODS)}")
    target = target or DEFAULT_TARGET[method]
    if target not in ALLOWED_TARGETS[method]:
        raise AblationError(
            f"method {method!r} cannot target {target!r}: it takes "
            f"{' or '.join(ALLOWED_TARGETS[method])} (targets: {', '.join(TARGETS)})"
        )
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise AblationError(f"eps must be a number, got {eps!r}") from None
    if method == "zero":
        value = 0.0
    elif method == "mean" and value != value:
        raise AblationError("eps must be a number (mean ablation does not use it)")
    elif method != "mean" and not (0 < value < float("inf")):
        raise AblationError(
            f"eps must be a finite number > 0 for method {method!r}, got {eps!r} "
            "(for an exact 0 use method 'zero')"
        )
    return value, target


@dataclass(frozen=True)
class AblationSpec(JsonSpec):
    """What to ablate: serialisable, hashable, and the same for hooks and weight surgery."""

    heads: tuple[HeadRef, ...]
    method: str = "ua"
    eps: float = 1e-5
    target: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", parse_heads(self.heads))
        eps, target = method_settings(self.method, self.eps, self.target)
        object.__setattr__(self, "target", target)
        object.__setattr__(self, "eps", eps)

    @property
    def kv_target(self) -> bool:
        return self.target in ("k", "v")

    def check(self, model, stacklevel: int = 2) -> "AblationSpec":
        """Raise unless every head exists in ``model``; warn about GQA group effects.

        ``stacklevel`` is passed to ``warnings.warn`` (2 = the caller of ``check``), so the warning names the user's line.
        """
        g = geometry(model)
        for h in self.heads:
            h.validate(g.n_layers, g.n_heads)
        if self.kv_target and g.is_gqa:
            warnings.warn(
                f"{self.target}-ablation on a GQA model ({g.n_heads} query heads share {g.n_kv_heads} KV heads): "
                f"it hits every query head of each KV group: {', '.join(map(str, self.affected_heads(model)))}",
                GQAGroupWarning,
                stacklevel=stacklevel,
            )
        return self

    def affected_heads(self, model) -> tuple[HeadRef, ...]:
        """Query heads whose computation changes: the heads themselves, or whole KV groups for k/v."""
        g = geometry(model)
        if not self.kv_target:
            return tuple(sorted(self.heads))
        out = set()
        for h in self.heads:
            kv = g.kv_head_of(h.head)
            out.update(HeadRef(h.layer, q) for q in range(kv * g.group_size, (kv + 1) * g.group_size))
        return tuple(sorted(out))


# --------------------------------------------------------------------------------------------
# The edit itself: one tensor operation per hooked module, per-row when rows ablate different heads.


@dataclass
class LayerEdit:
    """Per-row edits of one layer's heads (units are query heads, or KV heads for k/v targets).

    ``scale[r, u]`` multiplies unit u in batch row r (1.0 leaves it bit-identical);
    ``mean[r, u]`` replaces it by the mean over the layer's units first. Either has 1 row
    (all batch rows alike) or one row per batch row.
    """

    scale: torch.Tensor
    mean: torch.Tensor | None = None
    _cast: dict = field(default_factory=dict, repr=False)

    def scale_for(self, like: torch.Tensor) -> torch.Tensor:
        key = (like.device, like.dtype)
        if key not in self._cast:
            self._cast[key] = self.scale.to(device=like.device, dtype=like.dtype)
        return self._cast[key]

    def mean_for(self, like: torch.Tensor) -> torch.Tensor:
        key = (like.device, "mean")
        if key not in self._cast:
            self._cast[key] = self.mean.to(device=like.device)
        return self._cast[key]


def layer_edit_for(heads_per_row: list[list[int]], n_units: int, method: str, eps: float) -> LayerEdit:
    """Build a LayerEdit: row r ablates the units ``heads_per_row[r]``."""
    scale = torch.ones(len(heads_per_row), n_units, dtype=torch.float64)
    mean = torch.zeros(len(heads_per_row), n_units, dtype=torch.bool) if method == "mean" else None
    for r, units in enumerate(heads_per_row):
        for u in units:
            if method == "mean":
                mean[r, u] = True
            else:
                scale[r, u] = eps
    return LayerEdit(scale, mean)


def _edit_units(part: torch.Tensor, edit: LayerEdit, unit_dim: int) -> torch.Tensor:
    """``part`` has units on ``unit_dim`` and batch on dim 0; returns the edited tensor."""
    shape = [1] * part.dim()
    shape[0], shape[unit_dim] = -1, part.shape[unit_dim]
    if edit.mean is not None:
        mean_vals = part.mean(dim=unit_dim, keepdim=True)
        part = torch.where(edit.mean_for(part).view(shape), mean_vals, part)
    if edit.mean is None or (edit.scale != 1).any():
        part = part * edit.scale_for(part).view(shape)
    return part


def apply_edit(x: torch.Tensor, site: Site, n_units: int, head_dim: int, edit: LayerEdit) -> torch.Tensor:
    if site.layout == "bhtd":  # per-head norm after the transpose (Gemma 3)
        return _edit_units(x, edit, unit_dim=1)
    if site.layout == "bthd":  # per-head norm before the transpose (Qwen 3)
        return _edit_units(x, edit, unit_dim=2)
    lead = x.shape[:-1]
    x5 = x.reshape(*lead, site.n_sections, n_units, head_dim)
    part = _edit_units(x5.select(-3, site.section), edit, unit_dim=x5.dim() - 3)
    if site.n_sections == 1:
        return part.reshape(x.shape)
    x5 = x5.clone()
    x5.select(-3, site.section).copy_(part)
    return x5.reshape(x.shape)


def target_site(model, target: str) -> Site:
    arch = get_arch(model)
    return {"q": arch.q, "k": arch.k, "v": arch.v, "out": arch.out}[target]


def n_units(g: Geometry, target: str) -> int:
    return g.n_kv_heads if target in ("k", "v") else g.n_heads


def unit_of(g: Geometry, head: int, target: str) -> int:
    return g.kv_head_of(head) if target in ("k", "v") else head


class RowEditor:
    """Hooks on every layer's target site that apply ``self.edits[layer]`` when present.

    Swap ``edits`` between forward passes to ablate other heads without re-registering hooks.
    """

    def __init__(self, model, target: str):
        self.model = model
        self.target = target
        self.site = target_site(model, target)
        self.geom = geometry(model)
        self.units = n_units(self.geom, target)
        self.edits: dict[int, LayerEdit] = {}
        self._handles: list = []

    def _hook_for(self, layer: int):
        site, units, hd = self.site, self.units, self.geom.head_dim

        if self.target == "out":

            def pre_hook(module, args, kwargs):
                edit = self.edits.get(layer)
                if edit is None:
                    return None
                if args:
                    return (apply_edit(args[0], site, units, hd, edit), *args[1:]), kwargs
                key = next(iter(kwargs))
                return args, {**kwargs, key: apply_edit(kwargs[key], site, units, hd, edit)}

            return pre_hook

        def hook(module, args, output):
            edit = self.edits.get(layer)
            if edit is None:
                return None
            return apply_edit(output, site, units, hd, edit)

        return hook

    def install(self, layers=None) -> "RowEditor":
        layers = range(self.geom.n_layers) if layers is None else layers
        for layer in layers:
            module = site_module(self.model, layer, self.site)
            if self.target == "out":
                h = module.register_forward_pre_hook(self._hook_for(layer), with_kwargs=True)
            else:
                h = module.register_forward_hook(self._hook_for(layer))
            self._handles.append(h)
        return self

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> "RowEditor":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def edits_for_spec(model, spec: AblationSpec) -> dict[int, LayerEdit]:
    g = geometry(model)
    units = n_units(g, spec.target)
    by_layer: dict[int, list[int]] = {}
    for h in spec.heads:
        u = unit_of(g, h.head, spec.target)
        by_layer.setdefault(h.layer, [])
        if u not in by_layer[h.layer]:
            by_layer[h.layer].append(u)
    return {layer: layer_edit_for([us], units, spec.method, spec.eps) for layer, us in by_layer.items()}


@contextmanager
def ablate(
    model,
    heads,
    method: str = "ua",
    eps: float = 1e-5,
    target: str | None = None,
) -> Iterator[AblationSpec]:
    """Ablate ``heads`` of ``model`` inside the ``with`` block; the hooks go on exit, errors included.

    ``heads`` is an AblationSpec (then ``method``/``eps``/``target`` come from it and the arguments
    are ignored), or anything ``parse_heads`` reads ("L2H26,L3H8", HeadRefs, ...).
    Yields the validated AblationSpec (serialise it with ``to_dict`` for a results manifest).
    """
    spec = heads if isinstance(heads, AblationSpec) else AblationSpec(parse_heads(heads), method, eps, target)
    spec.check(model, stacklevel=4)  # check -> ablate -> contextlib __enter__ -> the user's `with`
    editor = RowEditor(model, spec.target)
    editor.edits = edits_for_spec(model, spec)
    editor.install(sorted(editor.edits))
    try:
        yield spec
    finally:
        editor.remove()


def row_family(spec: AblationSpec | None):
    """Specs of one family (method, eps, target) can share a batch, each row its own heads."""
    return None if spec is None else (spec.method, spec.eps, spec.target)


@contextmanager
def ablate_rows(model, specs: "list[AblationSpec | None]") -> Iterator[None]:
    """Ablate batch row r with ``specs[r]`` (None: row r is left as it is) inside the ``with``
    block. Every spec must share method, eps and target; rows without an edit in a layer are
    scaled by exactly 1.0, so they compute what an unablated batch computes."""
    fams = {row_family(s) for s in specs if s is not None}
    if len(fams) > 1:
        raise AblationError(f"ablate_rows needs one method/eps/target for every row, got {sorted(map(str, fams))}")
    if not fams:
        yield
        return
    method, eps, target = fams.pop()
    editor = RowEditor(model, target)
    rows: list[dict[int, set[int]]] = []
    for s in specs:
        units: dict[int, set[int]] = {}
        for h in (s.heads if s is not None else ()):
            units.setdefault(h.layer, set()).add(unit_of(editor.geom, h.head, target))
        rows.append(units)
    for layer in sorted({layer for r in rows for layer in r}):
        editor.edits[layer] = layer_edit_for([sorted(r.get(layer, ())) for r in rows], editor.units, method, eps)
    editor.install(sorted(editor.edits))
    try:
        yield
    finally:
        editor.remove()
