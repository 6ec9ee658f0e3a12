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

from pathlib import Path

from .recipe import RECIPES, STAGED_CHANGES, OrganismRecipe, get_recipe, staged_recipe
from .registry import ADAPTER_FILE, HERE, ORGANISMS, apply_adapter, check_adapter_files, read_manifest
from .registry import MANIFEST_KEYS as MANIFEST_KEYS  # re-exported: it lived here

# The next recipe's builds (recipe.STAGED_CHANGES). organism_dir reads STAGED_DIR from this module,
# so that pointing safetyheads.organisms.STAGED_DIR elsewhere moves every staged folder.
STAGED_DIR = HERE / "staged"


def organism_dir(name: str, staged: bool = False) -> Path:
    """The committed organism's folder; ``staged``: the next recipe's build of it (recipe.STAGED_CHANGES)."""
    return (STAGED_DIR if staged else HERE) / name


__all__ = ["ADAPTER_FILE", "ORGANISMS", "OrganismRecipe", "RECIPES", "STAGED_CHANGES", "STAGED_DIR", "apply_adapter",
           "check_adapter_files", "get_recipe", "organism_dir", "read_manifest", "staged_recipe"]
