"""Numerical tolerances of the test suite, each derived from where its error comes from.

Two computations that are equal in exact arithmetic but sum in another order (another batch
shape, another attention kernel, hooks vs edited weights, another CPU: AVX-512 kernels sum
differently from AVX2 ones) agree only up to rounding. So a tolerance here is the dtype's machine
epsilon times a bound that fits the computation, never a number fitted on one CPU. The measured
maxima quoted were taken on an Intel Xeon with AVX-512/AMX, by default and with
ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2.

Effect-size thresholds ("the ablation did something") are lower bounds on an effect, not
rounding: they stay in the tests, commented as such.
"""

from __future__ import annotations

import math

import torch

EPS32 = torch.finfo(torch.float32).eps  # 1.19e-07
EPS64 = torch.finfo(torch.float64).eps  # 2.22e-16


def sum_atol(n_terms: int, abs_sum: float, eps: float = EPS32) -> float:
    """Rounding error of a sum of ``n_terms`` floating-point terms, in *any* order: Higham's bound
    gamma_{n-1} * sum|terms| (gamma_k = k*u / (1 - k*u), u = eps/2) is below n * eps * sum|terms|.
    A dot product is such a sum (its products round too: one more term's worth).

    A worst case: no summation order on any CPU exceeds it. Where the measured error comes within
    10x of it (a mean of 4 numbers: 0.7 of the 5 ulps allowed), the worst case is nearly reached.
    """
    return n_terms * eps * abs_sum


def forward_rtol(model, probabilistic: bool = False) -> float:
    """Relative fp32 noise of a whole forward pass in another summation order: two runs' outputs
    (logits, final states) differ by at most this times their largest magnitude.

    A layer's outputs are dot products of at most K terms (K = the widest reduction: the MLP's
    down-projection), each off by <= K * eps times the magnitudes summed (``sum_atol``), and the
    L layers plus the embeddings add their errors into the residual stream: K * (L + 1) * eps.
    That worst case suits the tiny models (3 layers; K = 96, 256 for GPT-2: 384 and 1024 ulps);
    measured: <= 11 ulps (eager vs sdpa, padded vs unpadded, hooks vs edited weights, merged vs
    unmerged LoRA), <= 3 between batch shapes. For a real model (30 layers, K = 1536: 4.8e4 ulps) it says nothing, so there
    ``probabilistic`` treats the K * (L + 1) roundings as independent zero-mean errors, which grow
    like the square root of their number (Higham and Mary, SIAM J. Sci. Comput. 2019): 218 ulps
    for SmolLM2-135M, where 10 are measured between batch shapes.
    """
    cfg = model.config
    hidden = cfg.hidden_size
    widest = max(hidden, getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * hidden)
    n = widest * (cfg.num_hidden_layers + 1)
    return (math.sqrt(n) if probabilistic else n) * EPS32


def forward_atol(model, outputs: torch.Tensor, probabilistic: bool = False) -> float:
    """``forward_rtol`` in the units of ``outputs`` (a forward pass's logits or final states)."""
    return forward_rtol(model, probabilistic) * outputs.detach().abs().max().item()


# ------------------------------------------------------------------------------------------------
# Ships: KL(softmax(clean) || softmax(ablated)) from fp32 logits, accumulated in float64


def ships_atol(kl: torch.Tensor, logit_atol: float) -> torch.Tensor:
    """Elementwise bound on how far Ships scores ``kl`` move when the *ablated* logits z move by at
    most ``logit_atol`` (= d) and the clean logits are shared (one clean pass, bit-identical).

    The gradient of KL(p || softmax(z)) with respect to z is q - p, so to first order
    |dKL| <= ||q - p||_1 * d <= sqrt(2 KL) * d (Pinsker); the second-order term is
    Var_q(dz) / 2 <= d^2 / 2. Measured, with d from forward_atol: the three sweep strategies agree
    to <= 0.002 of this on the tiny models (0.006 on SmolLM2-135M), and a sweep that ablated the
    wrong head misses it by >= 500x (checked by rotating the heads within a batch; not committed).
    """
    kl = torch.as_tensor(kl, dtype=torch.float64)
    return (2 * kl.clamp(min=0)).sqrt() * logit_atol + logit_atol**2


def kl_atol(clean: torch.Tensor, ablated: torch.Tensor, logit_atol: float) -> float:
    """Bound on how far KL(softmax(clean) || softmax(ablated)) moves when *both* logit vectors move
    by at most ``logit_atol`` (= d), computed from the logits themselves.

    With p, q the two distributions and r = log p - log q: dKL/dz = q - p and dKL/dc = p (r - KL),
    so |dKL| <= (||q - p||_1 + E_p|r - KL|) * d to first order; the second derivatives sum (in
    absolute value) to at most 8 + 4 E_p|r - KL|, hence the d^2 term.
    """
    lp = torch.log_softmax(clean.detach().double(), -1)
    lq = torch.log_softmax(ablated.detach().double(), -1)
    p, r = lp.exp(), lp - lq
    kl = (p * r).sum()
    spread = (p * (r - kl).abs()).sum().item()
    first = (lq.exp() - p).abs().sum().item() + spread
    return first * logit_atol + (4 + 2 * spread) * logit_atol**2


def f64_kl_atol(n_classes: int) -> float:
    """How far two float64 computations of one KL over ``n_classes`` (another formula, another
    summation order) can differ.

    Each of the two log-sum-exps sums n positive terms (relative error < n * eps64, so its log is
    off by < n * eps64) and enters sum p (log p - log q) with total weight sum p = 1; the elementwise
    logs and products add a few eps64 more: < 2n * eps64 per computation, 4n * eps64 between two.
    (fp32 logs are off by ~eps32 * |log p| ~ 1e-6, so this still tells float64 from float32.)
    """
    return 4 * n_classes * EPS64


# ------------------------------------------------------------------------------------------------
# Principal angles (float64 SVD, arccos of singular values)


def zero_angle_atol(r: int, rows: int, cols: int) -> float:
    """Bound (radians) on the sum of ``r`` principal angles between two *equal* subspaces.

    The SVD's U is orthonormal to about rows * cols * eps64, so a singular value of U^T U that
    should be 1 comes out as 1 - x with x < rows * cols * eps64, and arccos(1 - x) ~ sqrt(2x): near
    zero an angle keeps only half of float64's digits. Measured: 3 ulps in x, 2e-6 degrees.
    """
    return r * math.sqrt(2 * rows * cols * EPS64)


def angle_atol(theta: float, rows: int, cols: int) -> float:
    """Bound (radians) on the float64 rounding of one principal angle ``theta`` away from 0:
    the singular value cos(theta) is off by < rows * cols * eps64, and d(arccos)/ds = 1/sin(theta)."""
    return rows * cols * EPS64 / math.sin(theta)


def subspace_atol(M: torch.Tensor, r: int, entry_atol: float) -> float:
    """Bound (radians) on how far the sum of r principal angles measured against the top-r left
    singular subspace of M moves when every entry of M moves by at most ``entry_atol``.

    Wedin's sin-theta theorem: each angle between the subspaces of M and M + E is at most
    asin(e / (gap - e)), gap = sigma_r - sigma_{r+1} of M, e = ||E||_2 <= ||E||_F <= sqrt(N d) *
    entry_atol; and the sum of the angles obeys the triangle inequality. With no gap to speak of
    (rank below r), no bound: 90 degrees per angle.
    For fp32 activations, take ``entry_atol`` from forward_atol(probabilistic=True): Wedin's worst
    case on top of the forward pass's worst case would allow degrees; this allows 0.007-0.2
    degrees on the tiny models, where two code paths differ by <= 1.4e-4 degrees (measured with
    MKL_ENABLE_INSTRUCTIONS=AVX2; <= 7e-5 by default).
    """
    s = torch.linalg.svdvals(M.detach().double())
    gap = (s[r - 1] - (s[r] if r < len(s) else 0.0)).item()
    e = math.sqrt(M.numel()) * entry_atol
    if gap <= 2 * e:
        return r * math.pi / 2
    return r * math.asin(e / (gap - e))
