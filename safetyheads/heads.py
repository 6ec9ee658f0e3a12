"""Naming attention heads: ``HeadRef`` and parsing of the paper's spellings."""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Iterable

from .arch import geometry
from .errors import HeadError

# "L2H26" (the paper's figures), "2-26" (its tables), "2.26"; layer and head are 0-indexed.
_HEAD_PATTERNS = (
    re.compile(r"^[Ll](\d+)[Hh](\d+)$"),
    re.compile(r"^(\d+)-(\d+)$"),
    re.compile(r"^(\d+)\.(\d+)$"),
)


@dataclass(frozen=True, order=True)
class HeadRef:
    """One query head: ``layer`` and ``head`` are 0-indexed, as in the paper."""

    layer: int
    head: int

    def __post_init__(self) -> None:
        try:  # accepts numpy/torch integers, refuses floats
            layer, head = operator.index(self.layer), operator.index(self.head)
        except TypeError:
            layer = head = -1
        if layer < 0 or head < 0:
            raise HeadError(f"a head needs non-negative integer layer and head, got layer={self.layer!r} head={self.head!r}")
        object.__setattr__(self, "layer", layer)
        object.__setattr__(self, "head", head)

    @classmethod
    def parse(cls, text: "str | HeadRef | tuple[int, int]") -> "HeadRef":
        if isinstance(text, HeadRef):
            return text
        if isinstance(text, tuple) and len(text) == 2:
            return cls(*text)
        if not isinstance(text, str):
            raise HeadError(f"cannot read a head from {text!r}: write it as L2H26, 2-26 or 2.26")
        s = text.strip()
        for pattern in _HEAD_PATTERNS:
            m = pattern.match(s)
            if m:
                return cls(int(m.group(1)), int(m.group(2)))
        raise HeadError(f"cannot read a head from {text!r}: write it as L2H26, 2-26 or 2.26 (0-indexed layer, head)")

    def __str__(self) -> str:
        return f"L{self.layer}H{self.head}"

    def validate(self, n_layers: int, n_heads: int) -> "HeadRef":
        if self.layer >= n_layers or self.head >= n_heads:
            raise HeadError(
                f"head {self} does not exist in this model: layers are 0..{n_layers - 1} "
                f"and heads 0..{n_heads - 1} (0-indexed)"
            )
        return self


def parse_heads(spec: "str | Iterable[str | HeadRef | tuple[int, int]] | HeadRef") -> tuple[HeadRef, ...]:
    """Parse ``"L2H26,L3H8"``, a list of names, or HeadRefs into a tuple without duplicates, order kept."""
    if isinstance(spec, (str, HeadRef)):
        items = [p for p in str(spec).split(",") if p.strip()] if isinstance(spec, str) else [spec]
    else:
        items = list(spec)
    out: list[HeadRef] = []
    for item in items:
        ref = HeadRef.parse(item)
        if ref not in out:
            out.append(ref)
    if not out:
        raise HeadError("no heads given: name at least one, e.g. L2H26")
    return tuple(out)


def all_heads(model) -> tuple[HeadRef, ...]:
    """Every query head of ``model``, layer-major."""
    g = geometry(model)
    return tuple(HeadRef(layer, head) for layer in range(g.n_layers) for head in range(g.n_heads))


def validate_heads(model, heads) -> tuple[HeadRef, ...]:
    g = geometry(model)
    return tuple(h.validate(g.n_layers, g.n_heads) for h in parse_heads(heads))
