"""timing.json, beside an extension model's artefacts: the seconds per forward row its run measured (its
Ships and Sahara computations), which later plans of that model read instead of an assumed rate."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from safetyheads.files import write_durably
from safetyheads.models import resolve_device

from ..compute.plan import measured_rate
from ..spec.profile import Profile

TIMING_FILE = "timing.json"


def write_timing(ctx, out_root: Path) -> Path | None:
    rate = measured_rate(ctx)
    if rate is None:
        return None
    device = resolve_device(ctx.device)
    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else device
    path = Path(out_root) / ctx.profile.folder / TIMING_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_durably(path, json.dumps({**rate, "device": name, "dtype": ctx.profile.dtype, "model": ctx.profile.models["aligned"],
                                    "measured_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1) + "\n")
    return path


def read_timing(profile: Profile, out_root: Path) -> dict | None:
    path = Path(out_root) / profile.folder / TIMING_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        float(data["seconds_per_forward"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a damaged record: the plan falls back to the assumption
    return data
