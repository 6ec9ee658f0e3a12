"""Weight surgery: write an ablation into the weights and save an ordinary checkpoint.

The saved folder loads with plain ``AutoModelForCausalLM.from_pretrained`` (no safetyheads
import) and computes what the hooks compute. New weights are always derived from the source
model's untouched tensors, so exporting twice never compounds the scaling (the authors'
notebook scaled ``W_q`` in place, so re-running a cell scaled it again).

* ua/sc/zero: the head's rows of W_q/W_k/W_v (and their bias, e.g. Qwen2) or its input
  columns of W_o are multiplied by eps (0 for zero).
* mean: rows replaced by the mean over the layer's heads' rows (q/k/v, bias too); for the
  output, ``W_o[:, j] += mean_{h in A} W_o[:, h] * |A|/H`` and ``W_o[:, h in A]`` becomes that
  term alone, which is the hook's "replace the head output by the mean over heads", written
  into the weights.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import torch

from .ablation import AblationSpec, n_units, unit_of
from .arch import Site, attention_module, geometry, get_arch, get_path
from .errors import AblationError
from .heads import parse_heads
from .provenance import model_source, provenance

MANIFEST = "safetyheads_ablation.json"


def _is_conv1d(module) -> bool:
    # GPT-2's Conv1D stores weight as [in, out]; nn.Linear as [out, in].
    return type(module).__name__ == "Conv1D"


def _slices(site: Site, units: tuple[int, ...], n: int, hd: int) -> list[slice]:
    base = site.section * n * hd
    return [slice(base + u * hd, base + (u + 1) * hd) for u in units]


def ablated_tensors(model, spec: AblationSpec) -> dict[str, torch.Tensor]:
    """``{state_dict name: new tensor}`` for every tensor the ablation changes (the model is untouched)."""
    arch, g = get_arch(model), geometry(model)
    spec.check(model)
    if arch.qk_norm and spec.target in ("q", "k") and spec.method in ("ua", "mean"):
        raise AblationError(
            f"{arch.family} normalises q and k per head after the projection, so {spec.method} on "
            f"{spec.target} cannot be written into the weights (the norm undoes the scaling); use hooks "
            "(safetyheads.ablate), or method 'zero'"
        )
    names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    n = n_units(g, spec.target)
    by_layer: dict[int, tuple[int, ...]] = {}
    for h in spec.heads:
        by_layer[h.layer] = tuple(sorted(set(by_layer.get(h.layer, ())) | {unit_of(g, h.head, spec.target)}))
    out: dict[str, torch.Tensor] = {}
    for layer, units in sorted(by_layer.items()):
        attn = attention_module(model, layer)
        if spec.target == "out":
            module = get_path(attn, arch.out.module)
            w = module.weight.detach()
            # Work on W_o as [hidden, heads*hd]: columns are the head slices.
            wo = (w.t() if _is_conv1d(module) else w).clone()
            cols = _slices(Site(arch.out.module), units, n, g.head_dim)
            if spec.method == "mean":
                blocks = wo.reshape(wo.shape[0], n, g.head_dim)
                extra = blocks[:, list(units)].sum(1) / n
                for s in cols:
                    wo[:, s] = 0
                wo += extra.repeat(1, n)
            else:
                factor = 0.0 if spec.method == "zero" else spec.eps
                for s in cols:
                    wo[:, s] *= factor
            out[names[id(module.weight)]] = (wo.t() if _is_conv1d(module) else wo).contiguous()
            continue
        site = {"q": arch.q_weight, "k": arch.k_weight, "v": arch.v_weight}[spec.target]
        module = get_path(attn, site.module)
        conv = _is_conv1d(module)
        rows = _slices(site, units, n, g.head_dim)
        section = slice(site.section * n * g.head_dim, (site.section + 1) * n * g.head_dim)
        for param in (module.weight, module.bias):
            if param is None:
                continue
            t = param.detach()
            t = (t.t() if conv and t.dim() == 2 else t).clone()  # rows = output features
            if spec.method == "mean":
                mean_rows = t[section].reshape(n, g.head_dim, *t.shape[1:]).mean(0)
                for s in rows:
                    t[s] = mean_rows
            else:
                factor = 0.0 if spec.method == "zero" else spec.eps
                for s in rows:
                    t[s] *= factor
            out[names[id(param)]] = (t.t() if conv and t.dim() == 2 else t).contiguous()
    return out


def changed_parameter_count(model, spec: AblationSpec) -> int:
    """Scalars that differ from the source model: the paper's "parameters modified"."""
    sd = dict(model.named_parameters())
    return sum(int((new != sd[name].detach()).sum()) for name, new in ablated_tensors(model, spec).items())


def export_ablated(
    model,
    heads,
    method: str = "ua",
    eps: float = 1e-5,
    out_dir: "str | Path" = "ablated-model",
    *,
    target: str | None = None,
    tokenizer=None,
) -> Path:
    """Save ``model`` with ``heads`` ablated in its weights, plus ``safetyheads_ablation.json``."""
    spec = heads if isinstance(heads, AblationSpec) else AblationSpec(parse_heads(heads), method, eps, target)
    new = ablated_tensors(model, spec)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in model.state_dict().items()}
    state.update(new)
    model.save_pretrained(out_dir, state_dict=state, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    changed = sum(int((t != model.state_dict()[k]).sum()) for k, t in new.items())
    manifest = {
        "ablation": spec.to_dict(),
        "affected_query_heads": [str(h) for h in spec.affected_heads(model)],
        "kv_group_note": (
            "k/v ablation on a GQA model: every query head of the KV group is affected"
            if spec.kv_target and geometry(model).is_gqa else None
        ),
        "modified_tensors": sorted(new),
        "parameters_modified": changed,
        "parameters_total": n_params,
        "parameters_modified_fraction": changed / n_params,
        "source_model": model_source(model),
        "provenance": provenance(),
        "exported_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out_dir


@torch.no_grad()
def swap_attention(model, donor) -> list[str]:
    """Copy every attention parameter (q/k/v/o projections, their biases, any q/k norms) of every
    layer from ``donor`` into ``model``, in place: the paper's Figure 6a puts the base model's
    attention into the aligned model. The two must share architecture and shapes.
    Returns the names of the parameters copied."""
    if get_arch(model).family != get_arch(donor).family or geometry(model) != geometry(donor):
        raise AblationError("attention swap needs two models of the same family and shape "
                            f"({get_arch(model).family} {geometry(model)} vs {get_arch(donor).family} {geometry(donor)})")
    attn = get_arch(model).attn
    donor_params = dict(donor.named_parameters())
    copied = []
    for name, param in model.named_parameters():
        if f".{attn}." in f".{name}":
            param.copy_(donor_params[name].to(device=param.device, dtype=param.dtype))
            copied.append(name)
    if not copied:
        raise AblationError(f"no attention parameters (under '{attn}') found to swap")
    return copied
