"""``safetyheads export``: write an ablation into the weights and save a plain checkpoint."""

from __future__ import annotations

from ..ablation import AblationSpec
from ..heads import parse_heads
from ..outputs import check_output
from ..surgery import export_ablated
from .args import add_ablation_args, add_model_args, load_from_args


def register(sub) -> None:
    p = sub.add_parser("export", help="write an ablation into the weights and save a plain checkpoint")
    add_model_args(p)
    add_ablation_args(p, heads_required=True)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    spec = AblationSpec(parse_heads(args.heads), args.method, args.eps, args.target)
    # The source model's own folder is an input: exporting into it would replace its weights.
    out = check_output(args.out, inputs={"--model": args.model}, overwrite=args.overwrite, folder=True)
    model, tok = load_from_args(args)
    export_ablated(model, spec, out_dir=out, tokenizer=tok)
    print(f"wrote {out} ({spec.method} on {spec.target} of {', '.join(map(str, spec.heads))}, eps {spec.eps:g}); "
          f"load it with AutoModelForCausalLM.from_pretrained({str(out)!r})")
    return 0
