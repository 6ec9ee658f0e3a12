"""Prompt sets: the paper's bundled harmful-query sets, or any user CSV/JSONL with a text column."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..files import cache_dir, failure_reason, write_failure

_HERE = Path(__file__).parent


@dataclass(frozen=True)
class BundledSet:
    name: str
    file: str
    column: str
    rows: int
    sha256: str


BUNDLED = {
    s.name: s
    for s in (
        BundledSet("advbench", "eval/advbench.csv", "input", 520,
                   "5741945fe2b57aa60a2b1e63fc1d400327c6269c608167ad63d3a829f953959d"),
        BundledSet("advbench-targets", "eval/advbench_with_targets.csv", "goal", 520,
                   "6cd1a5c63c07610d7eb67307772ee5606017ee950b5770ab288a2c487489d3e1"),
        BundledSet("jailbreakbench", "eval/jailbreakbench.csv", "Goal", 100,
                   "4a8ec6832056b631eb092dccc60d37a61c3d441268268888b3d006288afeffa1"),
        BundledSet("maliciousinstruct", "eval/maliciousinstruct.csv", "input", 100,
                   "bee8f7a3da07becb685d3d0c8d28a9fbd98813d1c7b9f275175432269f325c0b"),
        # Training prompts for the model organisms (safetyheads.organisms); never evaluation sets.
        BundledSet("harmbench-test", "train/harmbench_test.json", "instruction", 159,
                   "606bca20a5212e676840ca928070e0905486df1bcc1f5f0223e7a76d8be62fd5"),
        BundledSet("harmbench-val", "train/harmbench_val.json", "instruction", 41,
                   "3e850f94d4462fd736505fa2653d72c02efd40c276f442580cab3a1a3a283c69"),
        BundledSet("strongreject", "train/strongreject.json", "instruction", 313,
                   "9786304587f3d860ab01d1dd2de4aff721ed7538ce4e2af715cbb74efe2a6f10"),
        BundledSet("tdc2023", "train/tdc2023.json", "instruction", 100,
                   "4c9804f5fdf2a006477807a0c225ad438d6a693d7fa7c93097f866b8dc2e89b8"),
        BundledSet("alpaca", "train/alpaca.json", "instruction", 31323,
                   "c4ce1bdc5c9b92caabcb171c27c7ec1e79832836bae10291d7c8ab8c6245f600"),
    )
}
LICENCES = {"advbench": "MIT", "advbench-targets": "MIT", "jailbreakbench": "MIT", "maliciousinstruct": "research release",
            "harmbench-test": "MIT", "harmbench-val": "MIT", "strongreject": "MIT", "tdc2023": "MIT",
            "alpaca": "CC BY-NC 4.0"}
# Column names tried, in order, when a user file does not say which column holds the prompts.
PROMPT_COLUMNS = ("input", "Goal", "goal", "prompt", "instruction", "query", "question", "text")


def bundled_path(name: str) -> Path:
    """Path of a bundled set, after checking its sha256 against SOURCES.md's."""
    s = BUNDLED[name]
    path = _HERE / s.file
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != s.sha256:
        raise DataError(f"bundled file {path} is corrupted (sha256 {digest[:12]}..., expected {s.sha256[:12]}...): reinstall safetyheads")
    return path


@dataclass(frozen=True)
class PromptSet:
    name: str
    prompts: tuple[str, ...]
    sha256: str  # of the source file
    column: str

    def provenance(self) -> dict:
        return {"dataset": self.name, "sha256": self.sha256, "column": self.column, "n": len(self.prompts)}


def _load_hub_dataset(source: str, split: str):
    """A Hub dataset id through ``datasets``, offline unless HF_HUB_OFFLINE=0 (from the local HF cache)."""
    import datasets  # heavy (pyarrow, pandas): only reading a data set needs it

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return datasets.load_dataset(source, split=split).to_pandas()
    except Exception as e:  # datasets raises many types; the user needs the first line only
        raise DataError(
            f"cannot load dataset {source!r} (split {split!r}) from the local Hugging Face cache: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__} (download it where there is network, "
            "or pass a .csv/.jsonl file)"
        ) from None


def load_prompts(source: str, column: str | None = None, limit: int | None = None, split: str = "train") -> PromptSet:
    """Prompts from a bundled set name, a ``.csv``/``.jsonl``/``.json`` file, or a Hub dataset id.

    Files are read through ``datasets`` (``load_dataset("csv"|"json", data_files=...)``), cached
    under the safetyheads cache. ``column`` defaults to the bundled set's, else the first of
    PROMPT_COLUMNS the data has. ``limit`` keeps the first N (in file order).
    """
    path = None
    if source in BUNDLED:
        path, default_col = bundled_path(source), BUNDLED[source].column
    elif Path(source).expanduser().is_file():
        path, default_col = Path(source).expanduser(), None
    elif "/" in source and not source.startswith((".", "/", "~")) and Path(source).suffix not in (".csv", ".jsonl", ".json"):
        frame, default_col = _load_hub_dataset(source, split), None
    else:
        raise DataError(f"no such prompt file or bundled set: {source!r} (bundled: {', '.join(BUNDLED)})")
    if path is not None:
        if path.suffix not in (".csv", ".jsonl", ".json"):
            raise DataError(f"{path}: prompt files must be .csv, .jsonl or .json")
        frame = _read_file(path)
    col = column or default_col or next((c for c in PROMPT_COLUMNS if c in frame.columns), None)
    if col is None or col not in frame.columns:
        wanted = repr(column) if column else f"any of {', '.join(PROMPT_COLUMNS)}"
        raise DataError(f"{path} has no column {wanted}; its columns are {', '.join(map(str, frame.columns)) or 'none'} (pick one with --column)")
    values = frame[col].tolist()
    blank = [i for i, v in enumerate(values) if not isinstance(v, str) or not v.strip()]
    if blank:
        raise DataError(f"{path}: column {col!r} has {len(blank)} empty or non-text value(s), first at row {blank[0] + 1}")
    if limit is not None:
        if limit < 1:
            raise DataError(f"limit must be >= 1, got {limit}")
        values = values[:limit]
    if not values:
        raise DataError(f"{path} holds no prompts")
    if path is not None:
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
    else:  # a Hub dataset: hash the prompts themselves
        sha = hashlib.sha256("\n".join(frame[col].tolist()).encode()).hexdigest()
    name = source if source in BUNDLED or path is None else str(path)
    return PromptSet(name, tuple(values), sha, col)


def _read_file(path: Path):
    """A CSV/JSON(L) file as a DataFrame of strings, through ``datasets``."""
    import datasets  # heavy (pyarrow, pandas): only reading a data set needs it

    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    if len(lines) <= (1 if path.suffix == ".csv" else 0):  # datasets fails obscurely on empty data
        raise DataError(f"{path} holds no prompts")
    datasets.disable_progress_bars()
    builder = "csv" if path.suffix == ".csv" else "json"
    kwargs = {"keep_default_na": False} if builder == "csv" else {}
    cache = cache_dir() / "datasets"
    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=str(cache), **kwargs)
    except Exception as e:  # pyarrow/pandas parse errors surface as several exception types
        failed = write_failure(e)  # a cache that cannot be written is no fault of the file (the bundled ones are checked)
        if failed is not None:
            raise DataError(f"cannot write the datasets cache {cache} ({failure_reason(failed)}): set "
                            "SAFETYHEADS_CACHE to a folder you can write, with free space") from None
        cause = e.__cause__ or e.__context__
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if cause is not None and str(cause):
            msg = str(cause).splitlines()[0]
        raise DataError(f"{path} is not a well-formed {path.suffix[1:]} file: {msg}") from None
    return ds.to_pandas()


def list_datasets() -> list[dict]:
    """The bundled sets with their sizes, columns, licences and hashes (see SOURCES.md)."""
    return [{"name": s.name, "rows": s.rows, "prompt column": s.column, "licence": LICENCES[s.name],
             "sha256": s.sha256[:16] + "...", "file": s.file} for s in BUNDLED.values()]
