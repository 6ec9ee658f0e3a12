"""How to decode: ``DecodingSpec`` (validated before any model runs), the per-row top-k sampler
and left padding. ``generation.py`` runs them through ``model.generate``, ``early_stop.py`` step by step."""

from __future__ import annotations

import hashlib
import math
import operator
from dataclasses import dataclass
from typing import Sequence

import torch

from .batching import left_pad  # noqa: F401 (re-exported: it lived here; the model judges share it)
from .errors import SafetyheadsError
from .judges import JUDGES

MODES = ("greedy", "topk")


@dataclass(frozen=True)
class DecodingSpec:
    """How to decode. ``greedy`` ignores ``k``, ``temperature`` and ``seed``; ``topk`` samples from
    the ``k`` most likely tokens, renormalised, at ``temperature`` (the paper: k=5, T=1).
    ``stop_when_settled``: judge names; a row stops once its verdict is settled for all of them
    (empty: off; kept sorted, so equal sets are equal specs)."""

    mode: str = "greedy"
    k: int = 5
    temperature: float = 1.0
    max_new_tokens: int = 128
    seed: int = 0
    stop_when_settled: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SafetyheadsError(f"unknown decoding {self.mode!r}: choose greedy or topk")
        object.__setattr__(self, "stop_when_settled", judge_names(self.stop_when_settled))
        object.__setattr__(self, "k", int_at_least(self.k, 1, "k (top-k)"))
        object.__setattr__(self, "max_new_tokens", int_at_least(self.max_new_tokens, 1, "max_new_tokens"))
        object.__setattr__(self, "seed", int_at_least(self.seed, 0, "seed"))
        try:
            temperature = float(self.temperature)
        except (TypeError, ValueError):
            raise SafetyheadsError(f"temperature must be a number, got {self.temperature!r}") from None
        if self.mode == "topk" and not (0 < temperature < math.inf):
            raise SafetyheadsError(
                f"temperature must be a finite number > 0 for top-k sampling, got {self.temperature!r} "
                "(for deterministic output use greedy decoding)"
            )
        object.__setattr__(self, "temperature", temperature)

    @property
    def sampling(self) -> bool:
        return self.mode == "topk"

    def to_dict(self) -> dict:
        """What determines the output: greedy records None for k, temperature and seed (unused).
        ``stop_when_settled`` appears only when set, so runs without it keep their store keys."""
        s = self.sampling
        out = {
            "mode": self.mode,
            "k": self.k if s else None,
            "temperature": self.temperature if s else None,
            "top_p": 1.0 if s else None,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed if s else None,
            "stop": "eos",
        }
        if self.stop_when_settled:
            out["stop_when_settled"] = list(self.stop_when_settled)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "DecodingSpec":
        defaults = cls()
        return cls(
            mode=d["mode"],
            k=defaults.k if d.get("k") is None else d["k"],
            temperature=defaults.temperature if d.get("temperature") is None else d["temperature"],
            max_new_tokens=d["max_new_tokens"],
            seed=defaults.seed if d.get("seed") is None else d["seed"],
            stop_when_settled=tuple(d.get("stop_when_settled") or ()),
        )


def judge_names(names) -> tuple[str, ...]:
    """``stop_when_settled`` checked and made canonical: known judge names, sorted, no repeats."""
    if isinstance(names, str):
        names = (names,)
    try:
        names = tuple(names)
    except TypeError:
        raise SafetyheadsError(f"stop_when_settled must be a list of judge names, got {names!r}") from None
    unknown = [n for n in names if not isinstance(n, str) or n not in JUDGES]
    if unknown:
        raise SafetyheadsError(f"stop_when_settled: unknown judge {unknown[0]!r}: choose from {', '.join(JUDGES)}")
    classifiers = [n for n in names if JUDGES[n].classifier]
    if classifiers:  # it would never stop a row: say so instead of decoding to the limit under an early-stop spec
        raise SafetyheadsError(f"stop_when_settled: judge {classifiers[0]!r} is a model classifier, which reads whole "
                               "responses and never settles: name a rule-based judge")
    return tuple(sorted(set(names)))


def int_at_least(value, lowest: int, name: str) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        n = operator.index(value)
    except TypeError:
        raise SafetyheadsError(f"{name} must be an integer >= {lowest}, got {value!r}") from None
    if n < lowest:
        raise SafetyheadsError(f"{name} must be an integer >= {lowest}, got {value!r}")
    return n


def row_seed(seed: int, prompt_id) -> int:
    """The seed of one prompt's generator: a hash of the run seed and the prompt id."""
    digest = hashlib.sha256(f"safetyheads-generate:{seed}:{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class TopKRowSampler:
    """Logits processor that draws each row's next token from its own CPU generator.

    Top-k of the logits, softmax at ``temperature`` in float64 (= the renormalised top-k of the
    tempered distribution), one ``torch.multinomial`` draw per row. Returns scores that are 0 at
    the drawn token and -inf elsewhere, so greedy ``generate`` picks exactly that token.
    Every row draws at every step, finished or not, so a row's draws depend only on its seed.
    """

    def __init__(self, seeds: Sequence[int], k: int, temperature: float):
        self.generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        self.k, self.temperature = k, temperature

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        k = min(self.k, scores.shape[-1])
        values, index = scores.topk(k, dim=-1)
        probs = torch.softmax(values.detach().to("cpu", torch.float64) / self.temperature, dim=-1)
        picks = torch.stack([torch.multinomial(probs[r], 1, generator=g) for r, g in enumerate(self.generators)])
        tokens = index.gather(-1, picks.to(index.device))
        out = torch.full_like(scores, -math.inf)
        return out.scatter_(-1, tokens, 0.0)
