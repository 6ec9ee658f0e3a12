"""``safetyheads organisms``: list, build and measure the model organisms."""

from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_BUILD_DIR = Path("safetyheads-out") / "organisms"  # beside the other commands' default outputs


def register(sub) -> None:
    p = sub.add_parser("organisms", help="list, build (train) and evaluate the safety-tuned model organisms")
    osub = p.add_subparsers(dest="organisms_command", required=True)
    osub.add_parser("list", help="the organisms, their recipes and whether their adapters are here")
    b = osub.add_parser("build", help="train an organism from its recipe (about 22 min on 2 CPU cores, twice "
                                      "that on some: docs/organisms.md)")
    b.add_argument("name", help="organism name (organism-a, organism-b)")
    b.add_argument("--out", help=f"adapter folder to write: new, empty, or an earlier build of this organism "
                   f"(default {DEFAULT_BUILD_DIR}/NAME, or NAME-staged with --staged)")
    b.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out that is not a build of this organism; only the build's "
                   "files (adapter_model.safetensors, adapter_config.json, manifest.json) are replaced there")
    b.add_argument("--steps", type=int, help="override the recipe's training steps (for quick checks)")
    b.add_argument("--n-benign", type=int, help="override the recipe's benign prompt count (for quick checks)")
    b.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda, cuda:1 ...")
    b.add_argument("--fresh", action="store_true",
                   help="from scratch: ignore an interrupted build's checkpoint and the cached answers of the base")
    b.add_argument("--staged", action="store_true",
                   help="the next recipe (recipe.STAGED_CHANGES); to stage it for committing, pass "
                   "--out safetyheads/organisms/staged/NAME")
    e = osub.add_parser("evaluate", help="measure refusals, over-refusal and fluency (about 15 min per organism)")
    e.add_argument("name", help="organism-a, organism-b, a built adapter folder, or smollm2-135m-instruct (the base reference)")
    e.add_argument("--out", help="folder for behaviour.json and generations.jsonl (default: the organism's folder)")
    e.add_argument("--quick", action="store_true", help="a small subset (MaliciousInstruct 24, benign 24, one random head)")
    e.add_argument("--no-random-heads", action="store_true", help="skip the random-head fluency check")
    osub.add_parser("report", help="regenerate BEHAVIOUR.md and the model cards from the measured files")
    c = osub.add_parser("check", help="compare a rebuilt organism's behaviour with the committed one")
    c.add_argument("name", help="organism-a or organism-b (the committed one)")
    c.add_argument("rebuilt", help="folder with the rebuilt organism's behaviour.json")
    c.add_argument("--staged", action="store_true", help="compare with the committed staged build (the next recipe's)")
    p.set_defaults(func=run)


def run(args) -> int:
    commands = {"list": _list, "build": _build, "evaluate": _evaluate, "report": _report, "check": _check}
    return commands[args.organisms_command](args)


def _list(args) -> int:
    from ..organisms import ORGANISMS, get_recipe, organism_dir, read_manifest

    for name in ORGANISMS:
        r = get_recipe(name)
        try:
            m = read_manifest(name)
            state = f"adapter {m['adapter']['sha256'][:12]}..., {m['adapter']['bytes'] / 1e6:.1f} MB"
        except Exception:
            state = "not built"
        print(f"{name}\t{state}\t{r.description}")
        try:
            m = read_manifest(name, organism_dir(name, staged=True))
            print(f"{name} (staged)\tadapter {m['adapter']['sha256'][:12]}..., next recipe: "
                  f"safetyheads organisms build {name} --staged")
        except Exception:
            pass
    return 0


def _build(args) -> int:
    from ..organisms import get_recipe, staged_recipe
    from ..organisms.build import build_organism

    recipe = staged_recipe(args.name) if args.staged else get_recipe(args.name)
    changes = {k: v for k, v in (("steps", args.steps), ("n_benign", args.n_benign)) if v is not None}
    if changes:
        recipe = recipe.replace(**changes, warmup_steps=min(recipe.warmup_steps, changes.get("steps", recipe.steps)))
    # Never the package's own folders by default: in an editable install they are the checkout.
    out = Path(args.out) if args.out else DEFAULT_BUILD_DIR / (recipe.name + ("-staged" if args.staged else ""))
    build_organism(recipe, out, device=args.device, fresh=args.fresh, overwrite=args.overwrite)
    print(out)
    return 0


def _report(args) -> int:
    from ..organisms.report import write_reports

    for path in write_reports():
        print(path)
    return 0


def _evaluate(args) -> int:
    import json

    from ..errors import SafetyheadsError
    from ..files import write_durably
    from ..models import EMBEDDED_MODELS
    from ..organisms import ORGANISMS, organism_dir
    from ..organisms.behaviour import QUICK, BehaviourSpec, load_behaviour, measure
    from ..organisms.report import BASE_DIR

    is_base = args.name in EMBEDDED_MODELS
    if args.out:
        out = Path(args.out)
    elif is_base:
        out = BASE_DIR
    elif args.name in ORGANISMS:
        out = organism_dir(args.name)
    else:
        out = Path(args.name)
    if args.quick:
        spec = QUICK
    elif is_base:  # the reference: benign answers (the NLL scale) and two harmful sets, no ablations
        spec = BehaviourSpec(harmful_sets=("jailbreakbench", "maliciousinstruct"), random_heads=0)
    else:
        spec = BehaviourSpec()
    base_scores = None
    if not is_base:
        try:
            base_scores = load_behaviour(BASE_DIR / "behaviour.json")["scores"]
        except SafetyheadsError:
            print("safetyheads: no base reference yet (safetyheads organisms evaluate smollm2-135m-instruct): "
                  "NLL targets are not checked", file=sys.stderr)
        if args.quick:
            base_scores = base_scores or {}
    result = measure(args.name, spec, out, base_scores=base_scores,
                     with_random_heads=not (is_base or args.no_random_heads))
    write_durably(out / "behaviour.json", json.dumps(result, indent=1) + "\n")  # measure() made the folder
    for c in result.get("checks", []):
        print(f"{'PASS' if c['ok'] else 'FAIL'}  {c['check']}: {c['value']} (target {c['target']})")
    print(out / "behaviour.json")
    return 0 if result.get("meets_targets", True) else 1


def _check(args) -> int:
    from tabulate import tabulate

    from ..errors import SafetyheadsError
    from ..organisms import get_recipe, organism_dir
    from ..organisms.behaviour import compare, load_behaviour

    get_recipe(args.name)  # an unknown name fails here, with the choices
    folder = organism_dir(args.name, staged=args.staged)
    if args.staged and not (folder / "behaviour.json").is_file():
        raise SafetyheadsError(f"no staged build of {args.name} in {folder}: `safetyheads organisms build {args.name} "
                               f"--staged`, then `safetyheads organisms evaluate {folder}`")
    committed = load_behaviour(folder / "behaviour.json")
    rebuilt = load_behaviour(Path(args.rebuilt) / "behaviour.json")
    rows = compare(rebuilt, committed)
    print(tabulate([[r["cell"], r["metric"], r["committed"], r["rebuilt"], r.get("tolerance", ""),
                     "PASS" if r["ok"] else "FAIL"] for r in rows],
                   headers=["cell", "metric", "committed", "rebuilt", "tolerance", "verdict"], tablefmt="github"))
    import json

    try:
        m_old = json.loads((folder / "manifest.json").read_text())["adapter"]["sha256"]
        m_new = json.loads((Path(args.rebuilt) / "manifest.json").read_text())["adapter"]["sha256"]
        print(f"adapter sha256: committed {m_old[:16]}..., rebuilt {m_new[:16]}... "
              f"({'bit-identical' if m_old == m_new else 'different bytes'})")
    except (OSError, KeyError, ValueError):
        pass
    bad = sum(not r["ok"] for r in rows)
    print(f"{len(rows) - bad} of {len(rows)} within tolerance")
    return 1 if bad else 0
