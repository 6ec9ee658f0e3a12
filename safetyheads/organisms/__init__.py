"""Model organisms: safety-tuned SmolLM2 models that refuse, built reproducibly on a CPU.

The embedded SmolLM2-135M-Instruct refuses almost nothing, so the paper's question (which heads
carry refusal?) cannot be asked of it. Each organism is the base plus a LoRA adapter on every
linear layer, trained by a recipe in ``recipe.RECIPES`` (``safetyheads organisms build``) and
shipped in this folder as ``<name>/adapter_model.safetensors`` with a manifest, a behaviour
report and a model card. ``load_model("organism-a")`` loads the base and merges the adapter
(peft's ``merge_and_unload``), so every tool sees a plain transformers model.

- ``organism-a``: the primary aligned model (stand-in for Llama-2-7b-chat);
- ``organism-b``: a sibling with another seed, data sample and refusal phrasing (stand-in for Vicuna-7b-v1.5);
- the untuned ``smollm2-135m-instruct`` plays the base model (Llama-2-7b in the attention-swap experiment).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ModelLoadError
from .recipe import RECIPES, STAGED_CHANGES, OrganismRecipe, get_recipe, staged_recipe

HERE = Path(__file__).parent
ORGANISMS = tuple(RECIPES)


STAGED_DIR = HERE / "staged"


def organism_dir(name: str, staged: bool = False) -> Path:
    """The committed organism's folder; ``staged``: the next recipe's build of it (recipe.STAGED_CHANGES)."""
    return (STAGED_DIR if staged else HERE) / name


# What loading an organism reads from its manifest: (dotted key, type).
MANIFEST_KEYS = (("organism", str), ("recipe", dict), ("recipe.base", str), ("base", dict), ("adapter", dict),
                 ("adapter.sha256", str))
ADAPTER_FILE = "adapter_model.safetensors"


def read_manifest(name: str, folder: "Path | None" = None) -> dict:
    folder = folder or organism_dir(name)
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
    from ..models import PICKLE_SUFFIXES  # here, not at the top: models imports torch, and this package is light

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
    from peft import PeftModel

    from ..models import sha256_file

    adapter = check_adapter_files(folder)
    if expected_sha256 is not None:
        got = sha256_file(adapter)
        if got != expected_sha256:
            raise ModelLoadError(f"{adapter} has sha256 {got[:16]}..., its manifest says {expected_sha256[:16]}...: "
                                 "the adapter is corrupted or was replaced without its manifest; reinstall or rebuild it")
    import warnings

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


__all__ = ["ADAPTER_FILE", "ORGANISMS", "OrganismRecipe", "RECIPES", "STAGED_CHANGES", "STAGED_DIR", "apply_adapter",
           "check_adapter_files", "get_recipe",
           "organism_dir", "read_manifest", "staged_recipe"]
