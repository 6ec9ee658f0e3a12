"""The JSON round trip of the library's frozen specs (``JsonSpec``): the jobs (``jobs``, ``judge_job``) and
the ablation (``ablation.AblationSpec``) each say what is computed as a frozen dataclass that a results
file's header or a queue can hold as JSON and rebuild equal."""

from __future__ import annotations

import json
from dataclasses import MISSING, fields, is_dataclass

from .errors import SafetyheadsError
from .heads import HeadRef


class SpecError(SafetyheadsError, ValueError):
    """A dict that does not name a spec's fields (unknown ones, or required ones missing)."""


def plain(value):
    """``value`` as JSON holds it: a head as its name ("L2H26"), a nested spec as a dict of its fields,
    a tuple as a list."""
    if isinstance(value, HeadRef):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return value


class JsonSpec:
    """For a frozen dataclass: ``to_dict`` holds plain values (``plain``), ``from_dict`` rebuilds an equal
    spec (its ``__post_init__`` reads the names back as heads), refusing unknown and missing fields with
    ``spec_error``."""

    spec_error: type[SafetyheadsError] = SpecError

    def to_dict(self) -> dict:
        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict):
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise cls.spec_error(f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}")
        missing = [f.name for f in fields(cls) if f.name not in d
                   and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise cls.spec_error(f"{cls.__name__} needs field(s) {', '.join(missing)}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(json.loads(text))
