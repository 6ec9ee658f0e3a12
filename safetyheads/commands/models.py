"""``safetyheads models``: the models available offline (``--prepare``: make them ready first)."""

from __future__ import annotations

from tabulate import tabulate

from .. import models
from ..arch import SUPPORTED_FAMILIES
from ..organisms import ORGANISMS


def register(sub) -> None:
    p = sub.add_parser("models", help="list the models available offline")
    p.add_argument("--prepare", action="store_true",
                   help="first dequantise the embedded models into the cache and check that every organism loads")
    p.set_defaults(func=cmd_models)


def cmd_models(args) -> int:
    if args.prepare:
        # Dequantise every installed embedded model into the cache and load every organism once
        # (adapter sha256 checked, merge exercised), so that later runs start offline and fast:
        # the Docker image runs this at build time.
        for name in (*models.EMBEDDED_MODELS, *ORGANISMS):
            model, _ = models.load_model(name, device="cpu")
            src = model.safetyheads_source
            print(f"ready: {name} ({src.get('kind')}, sha256 {str(src.get('adapter_sha256') or src.get('sha256'))[:16]}...)")
            del model
    rows = models.available_models()
    print(tabulate(rows, headers="keys", tablefmt="github"))
    print(f"\ncache: {models.cache_dir()}   supported families: {SUPPORTED_FAMILIES}")
    print("also accepted by --model: a .gguf file, or a local folder with config.json and *.safetensors")
    return 0
