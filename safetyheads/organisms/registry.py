"""The organisms the library can load: their names, the committed folders, the manifests and the
LoRA adapters. ``models.load_model`` reads an organism through this module; the builders beside it
(dataset, train, build, behaviour, report) use the library, never the other way round."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from ..errors import ModelLoadError
from ..files import PICKLE_SUFFIXES, sha256_file
from .recipe import RECIPES

HERE = Path(__file__).parent  # the committed organisms: HERE / <name>
ORGANISMS = tuple(RECIPES)

# What loading an organism reads from its manifest: (dotted key, type).
MANIFEST_KEYS = (("organism", str), ("recipe", dict), ("recipe.base", str), ("base", dict), ("adapter", dict),
                 ("adapter.sha256", str))
ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_FILES = (ADAPTER_FILE, "adapter_config.json")  # peft's adapter format, as train.save_adapter writes it


def read_manifest(name: str, folder: "Path | None" = None) -> dict:
    """The manifest of organism ``name`` in ``folder`` (default: the committed one), checked for
    every key loading reads."""
    folder = folder or HERE / name
    path = folder / "manifest.json"
    if not path.is_file():
        raise ModelLoadError(f"organism {name!r} has no adapter in {folder}: build it with `safetyheads organisms build {name}`")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{path} is not valid JSON ({str(e).splitlines()[0]}): rebuild the organism with "
                             "`safetyheads organisms build`") from None
    for key, kind in MANIFEST_KEYS:
        value = manifest
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if not isinstance(value, kind):
            raise ModelLoadError(f"{path} has no {key!r} ({kind.__name__}): it is not a complete manifest of "
                                 "`safetyheads organisms build`; rebuild the organism")
    return manifest


def check_adapter_files(folder: Path) -> Path:
    """The adapter's safetensors file; refuses a folder holding a pickle, which peft would unpickle
    when the safetensors file is absent (and the project promises that nothing is unpickled)."""
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise ModelLoadError(f"{folder} holds {', '.join(pickled)}: pickled adapters are never loaded; keep only "
                             f"{ADAPTER_FILE} (convert the adapter to safetensors) and remove the pickle")
    adapter = folder / ADAPTER_FILE
    if not adapter.is_file():
        raise ModelLoadError(f"{folder} has no {ADAPTER_FILE}: rebuild the organism with `safetyheads organisms build`")
    return adapter


def apply_adapter(model, folder: Path, expected_sha256: str | None = None):
    """Merge the LoRA adapter in ``folder`` into ``model`` -> a plain transformers model."""
    from peft import PeftModel  # heavy (imports transformers): only loading an organism needs it

    adapter = check_adapter_files(folder)
    if expected_sha256 is not None:
        got = sha256_file(adapter)
        if got != expected_sha256:
            raise ModelLoadError(f"{adapter} has sha256 {got[:16]}..., its manifest says {expected_sha256[:16]}...: "
                                 "the adapter is corrupted or was replaced without its manifest; reinstall or rebuild it")
    dtype = next(model.parameters()).dtype
    with warnings.catch_warnings():  # peft asks transformers a deprecated question; nothing for users to do
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        try:
            merged = PeftModel.from_pretrained(model, str(folder), is_trainable=False).merge_and_unload()
        except Exception as e:  # peft raises ValueError, KeyError, RuntimeError, SafetensorError ... on a bad adapter
            text = str(e).strip()
            raise ModelLoadError(f"cannot apply the adapter in {folder} ({type(e).__name__}: "
                                 f"{text.splitlines()[0] if text else ''}): its adapter_config.json and "
                                 f"{ADAPTER_FILE} must be the ones `safetyheads organisms build` wrote") from None
    return merged.to(dtype)
