"""Generalized Ships: how far an ablation rotates the dataset's dominant activation directions
(the definition and the authors' settings: ``docs/paper.md``, "Scores").

For N queries, stack the final-layer, post-final-norm hidden state of each query's last token
into M (N x d). Thin SVD M = U S V^T; U's columns span "query space". The score of an ablation is
the sum of the principal angles between span(U_clean[:, :r]) and span(U_ablated[:, :r]).

The paper does not state r ("r_main"); the authors' code uses r = 1 and reports degrees with no
mean-centring, which are the defaults here.
"""

from __future__ import annotations

import math

import torch

from .errors import SafetyheadsError


def principal_angles(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Principal angles (radians, ascending) between the column spans of orthonormal A and B (N x r)."""
    s = torch.linalg.svdvals(A.transpose(-2, -1) @ B).clamp(max=1.0)
    return torch.arccos(s).flip(-1).sort(-1).values


def top_left_singular(M: torch.Tensor, r: int) -> torch.Tensor:
    """The first r left singular vectors of M (N x d), in float64."""
    return torch.linalg.svd(M.double(), full_matrices=False).U[..., :r]


def generalized_ships(M_clean: torch.Tensor, M_ablated: torch.Tensor, r: int = 1, degrees: bool = True) -> float:
    """Sum of the r principal angles between the top-r left singular subspaces of the two matrices."""
    if M_clean.shape != M_ablated.shape or M_clean.dim() != 2:
        raise SafetyheadsError(f"activation matrices must both be N x d, got {tuple(M_clean.shape)} and {tuple(M_ablated.shape)}")
    if not 1 <= r <= min(M_clean.shape):
        raise SafetyheadsError(f"r must be between 1 and min(N, d) = {min(M_clean.shape)}, got {r}")
    total = float(principal_angles(top_left_singular(M_clean, r), top_left_singular(M_ablated, r)).sum())
    return math.degrees(total) if degrees else total


def generalized_ships_batch(M_clean: torch.Tensor, M_ablated: torch.Tensor, r: int = 1, degrees: bool = True) -> torch.Tensor:
    """``generalized_ships`` for a stack of ablated matrices ``[H, N, d]`` against one clean ``[N, d]``."""
    if M_ablated.dim() != 3 or M_ablated.shape[1:] != M_clean.shape:
        raise SafetyheadsError(f"expected ablated [H, N, d] matching clean {tuple(M_clean.shape)}, got {tuple(M_ablated.shape)}")
    if not 1 <= r <= min(M_clean.shape):
        raise SafetyheadsError(f"r must be between 1 and min(N, d) = {min(M_clean.shape)}, got {r}")
    Uc = top_left_singular(M_clean, r)
    Ua = top_left_singular(M_ablated, r)
    total = principal_angles(Uc.expand(Ua.shape[0], -1, -1), Ua).sum(-1)
    return torch.rad2deg(total) if degrees else total
