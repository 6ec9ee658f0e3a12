"""The extension's table of models: the headline experiments (Figures 2, 4, 5 and Table 3) with the paper's
protocol on four GQA chat models of 2024, one model at a time, on a GPU. The extension profile itself, and
the profile of one of its models, are in ``replication.spec.profiles``."""

from __future__ import annotations

from dataclasses import dataclass

from safetyheads.errors import SafetyheadsError


@dataclass(frozen=True)
class HubModel:
    id: str  # Hub repository
    revision: str  # a commit SHA, or "main" where none could be confirmed (the README lists which)
    label: str


@dataclass(frozen=True)
class ExtensionModel:
    """One row of the extension's model table. The geometry and size are for ``--dry-run`` only (a run
    reads the loaded model's own); ``sibling``: another fine-tune of the same base, where one is named
    (Figure 2's second model and Figure 5b); ``base``: the untuned base (Figure 5's control)."""

    slug: str
    family: str  # safetyheads.arch family
    aligned: HubModel
    base: HubModel
    sibling: HubModel | None
    params_b: float  # parameters, billions
    n_layers: int
    n_heads: int  # query heads per layer
    n_kv_heads: int
    attn_implementation: str = "sdpa"
    chat_system_prompt: str | None = "You are a helpful assistant"

    def roles(self) -> dict:
        return {"aligned": self.aligned, "sibling": self.sibling, "base": self.base}


# Hub commits: each is the snapshot that public projects record for that repository; unchecked here
# (this project's machines cannot reach the Hub): `hf download ID --revision SHA` fails loudly if one is
# wrong. "main": no commit could be confirmed; the run records the commit it loaded in its provenance.
EXTENSION_MODELS = (
    ExtensionModel(
        "llama-3.1-8b-instruct", "llama",
        HubModel("meta-llama/Llama-3.1-8B-Instruct", "0e9e39f249a16976918f6564b8830bc894c89659", "Llama-3.1-8B-Instruct"),
        HubModel("meta-llama/Llama-3.1-8B", "d04e592bb4f6aa9cfee91e2e20afa771667e1d4b", "Llama-3.1-8B (base)"),
        # AllenAI's SFT + DPO + RLVR fine-tune of the same base: a second lab's fine-tune, as Vicuna is of Llama-2
        HubModel("allenai/Llama-3.1-Tulu-3-8B", "main", "Llama-3.1-Tulu-3-8B"),
        8.03, 32, 32, 8),
    ExtensionModel(
        "qwen2.5-7b-instruct", "qwen2",
        HubModel("Qwen/Qwen2.5-7B-Instruct", "a09a35458c702b33eeacc393d103063234e8bc28", "Qwen2.5-7B-Instruct"),
        HubModel("Qwen/Qwen2.5-7B", "d149729398750b98c0af14eb82c78cfe92750796", "Qwen2.5-7B (base)"),
        None, 7.62, 28, 28, 4),
    ExtensionModel(
        "gemma-2-9b-it", "gemma2",
        HubModel("google/gemma-2-9b-it", "11c9b309abf73637e4b6f9a3fa1e92e615547819", "Gemma-2-9b-it"),
        HubModel("google/gemma-2-9b", "33c193028431c2fde6c6e51f29e6f17b60cbfac6", "Gemma-2-9b (base)"),
        None, 9.24, 42, 16, 8,
        attn_implementation="eager",  # attention logit soft-capping exists only in the eager kernel
        chat_system_prompt=None),  # Gemma's chat template has no system turn (it raises on one)
    ExtensionModel(
        "mistral-7b-instruct-v0.3", "mistral",
        HubModel("mistralai/Mistral-7B-Instruct-v0.3", "c170c708c41dac9275d15a8fff4eca08d52bab71", "Mistral-7B-Instruct-v0.3"),
        HubModel("mistralai/Mistral-7B-v0.3", "caa1feb0e54d415e2df31207e5f4e273e33509b1", "Mistral-7B-v0.3 (base)"),
        None, 7.25, 32, 32, 8),
)

EXTENSION_ARTEFACTS = ("figure2", "table3", "figure4", "figure5")
# The paper profile's planning figure (0.03 s per row of a 6.7B model in fp32 on an A100-80GB), scaled by
# parameter count and halved for bf16: an assumption until a run of the model has measured its own.
PAPER_PARAMS_B = 6.74
BF16_SPEEDUP = 2.0


def extension_model(slug: str, table: tuple = EXTENSION_MODELS) -> ExtensionModel:
    """The row of ``table`` (default: every extension model) named ``slug``."""
    found = {m.slug: m for m in table}
    if slug not in found:
        raise SafetyheadsError(f"unknown extension model {slug!r}: choose from {', '.join(found)}")
    return found[slug]
