"""FLoRA aggregation: the exact weighted sum of the participants' products B_k·A_k, re-projected to rank r.

FLoRA (Wang et al., 2024, "FLoRA: Federated fine-tuning large language models with heterogeneous low-rank
adaptations") stacks the clients' factors: [w_1 B_1 … w_n B_n]·[A_1; …; A_n] = Σ_k w_k B_k A_k, the exact
aggregate of the updates (any rank per client), where averaging A and B separately is not. Our global
adapter is a rank-r (B, A) pair, so the new global product

    W' = W_g + η Σ_k ω_k (B_k A_k − W_g)     (W_g = B_g A_g, B_k = B_g + ΔB_k, A_k = A_g + ΔA_k,
                                               ω the aggregation rule's normalised weights, η = server_lr)

is projected to its best rank-r approximation (Eckart–Young: truncated SVD) and split as B' = U_r·S_r,
A' = V_rᵀ (orthonormal rows, so A' never collapses to zero and B' can always learn). The projection error
||W' − B'A'||_F is reported per round. Everything is float64 on the CPU via thin QR of the stacked factors
(W' = Q_B (R_B R_Aᵀ) Q_Aᵀ, then an SVD of the small K×K core, K = (n + 1)·r), so it costs O((in + out)·K²)
per module instead of an SVD of the full matrix; singular vectors get a fixed sign (the largest-magnitude
entry of each left vector is positive) so the result is a pure, repeatable function of its inputs.

Robust rules run unchanged on the flat (A, B) deltas and decide the weights ω and flags; only rules whose
aggregate *is* the ω-weighted mean of the updates (`FLORA_AGGREGATORS`) carry over exactly to products.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from consortium.defense import NEEDS

F64 = torch.float64
Layout = Sequence[tuple[str, tuple[int, ...]]]

# Rules whose result is Σ ω_k u_k with ω = AggregateResult.weights (registered with `flora=True`); the
# others (coordinate-wise medians, clipping, rescaling, noise, sign votes) have no meaning on products
# and are refused under flora.
FLORA_AGGREGATORS: tuple[str, ...] = tuple(sorted(n for n, x in NEEDS.items() if x.flora))


class FloraError(ValueError):
    """A layout or rule that FLoRA aggregation cannot handle, named."""


def check_rule(aggregator: str) -> None:
    """Refuse an aggregator whose result is not a weighted mean of the updates (it has no product form)."""
    if aggregator not in FLORA_AGGREGATORS:
        raise FloraError(
            f"lora.variant 'flora' needs an aggregator whose result is a weighted mean of the updates "
            f"({', '.join(FLORA_AGGREGATORS)}); got {aggregator!r}"
        )


def factor_pairs(layout: Layout) -> list[tuple[str, slice, tuple[int, int], slice, tuple[int, int]]]:
    """Per adapted module: (name, A's slice, A's (r, in), B's slice, B's (out, r)) in the flat vector."""
    offsets: dict[str, tuple[slice, tuple[int, ...]]] = {}
    at = 0
    for key, shape in layout:
        n = math.prod(shape)
        offsets[key] = (slice(at, at + n), tuple(shape))
        at += n
    pairs = []
    for key in sorted(offsets):
        if not key.endswith(".lora_A.weight"):
            continue
        module = key[: -len(".lora_A.weight")]
        b_key = f"{module}.lora_B.weight"
        if b_key not in offsets:
            raise FloraError(f"flora: layout has {key!r} but no {b_key!r}")
        (sa, a_shape), (sb, b_shape) = offsets[key], offsets[b_key]
        if len(a_shape) != 2 or len(b_shape) != 2 or a_shape[0] != b_shape[1]:
            raise FloraError(f"flora: {module!r} has A {a_shape} and B {b_shape}, not (r, in) and (out, r)")
        pairs.append((module, sa, (a_shape[0], a_shape[1]), sb, (b_shape[0], b_shape[1])))
    paired = {k for m, *_ in pairs for k in (f"{m}.lora_A.weight", f"{m}.lora_B.weight")}
    if not pairs or paired != set(offsets):
        extra = sorted(set(offsets) - paired)[:3]
        raise FloraError(f"flora: the layout must hold only lora_A/lora_B pairs; unpaired: {extra}")
    return pairs


def stacked_factors(
    vecs: torch.Tensor,
    coefs: Sequence[float],
    a_slice: slice,
    a_shape: tuple[int, int],
    b_slice: slice,
    b_shape: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B_s, A_s) in float64 with B_s·A_s = Σ_j c_j B_j A_j exactly, for the adapters `vecs` [m, d]: the
    blocks [c_1 B_1 | c_2 B_2 | …] and [A_1; A_2; …]; zero-coefficient blocks are left out."""
    keep = [j for j, c in enumerate(coefs) if c != 0.0]
    if not keep:
        return torch.zeros(b_shape[0], 0, dtype=F64), torch.zeros(0, a_shape[1], dtype=F64)
    b_s = torch.cat([coefs[j] * vecs[j, b_slice].reshape(b_shape).to(F64) for j in keep], dim=1)
    a_s = torch.cat([vecs[j, a_slice].reshape(a_shape).to(F64) for j in keep], dim=0)
    return b_s, a_s


def product_terms(
    global_vec: torch.Tensor, deltas: torch.Tensor, weights: torch.Tensor, server_lr: float
) -> tuple[torch.Tensor, list[float]]:
    """The adapters and coefficients of W' = W_g + η Σ_k ω_k (B_k A_k − W_g) = Σ_j c_j B_j A_j: the global
    with c = 1 − η Σω, then each participant's own adapter (start + delta, added in float32 as its
    training did) with c = η ω_k."""
    w = weights.to(F64)
    coefs = [1.0 - server_lr * float(w.sum())] + [server_lr * float(x) for x in w.tolist()]
    return torch.cat([global_vec[None], global_vec[None] + deltas]), coefs


def truncated_svd(
    b_s: torch.Tensor, a_s: torch.Tensor, r: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U_r, S, V_r) of W = B_s·A_s without forming W: thin QRs of both factors, SVD of the small core.

    S holds every singular value of W (descending, for the projection error); U_r, V_r the top r vectors,
    signs fixed so that each column of U_r has its largest-magnitude entry positive.
    """
    out_dim, in_dim = b_s.shape[0], a_s.shape[1]
    if r > min(out_dim, in_dim):
        raise FloraError(f"flora: rank {r} exceeds min(out, in) = {min(out_dim, in_dim)}")
    if b_s.shape[1] < r:  # fewer stacked columns than r: pad with zero blocks (W unchanged)
        pad = r - b_s.shape[1]
        b_s = torch.cat([b_s, torch.zeros(out_dim, pad, dtype=F64)], dim=1)
        a_s = torch.cat([a_s, torch.zeros(pad, in_dim, dtype=F64)], dim=0)
    q_b, r_b = torch.linalg.qr(b_s)  # out × k1, k1 × K
    q_a, r_a = torch.linalg.qr(a_s.T)  # in × k2, k2 × K
    u, s, vh = torch.linalg.svd(r_b @ r_a.T, full_matrices=False)
    u_r = q_b @ u[:, :r]
    v_r = q_a @ vh[:r].T
    idx = u_r.abs().argmax(dim=0)
    sign = torch.where(u_r[idx, torch.arange(r)] < 0, -1.0, 1.0).to(F64)
    return u_r * sign, s, v_r * sign


def flora_candidate(
    layout: Layout,
    global_vec: torch.Tensor,
    deltas: torch.Tensor,
    weights: torch.Tensor,
    server_lr: float,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The next global (B', A') vector, float32 in layout order, and the projection's report.

    `deltas` [n, d] are the participants' (A, B) deltas against `global_vec`, `weights` [n] the rule's
    normalised weights (0 for flagged or screened clients). With every weight 0 the global is unchanged.
    """
    if not bool((weights.to(F64) != 0).any()):
        return global_vec.clone(), {"projected": False, "reason": "no participant weighted"}
    out = torch.empty_like(global_vec)
    err2 = total2 = 0.0
    worst = 0.0
    vecs, coefs = product_terms(global_vec, deltas, weights, server_lr)
    for _, sa, a_shape, sb, b_shape in factor_pairs(layout):
        b_s, a_s = stacked_factors(vecs, coefs, sa, a_shape, sb, b_shape)
        r = a_shape[0]
        u_r, s, v_r = truncated_svd(b_s, a_s, r)
        out[sb] = (u_r * s[:r]).to(torch.float32).reshape(-1)
        out[sa] = v_r.T.to(torch.float32).contiguous().reshape(-1)
        tail2, all2 = float((s[r:] ** 2).sum()), float((s**2).sum())
        err2 += tail2
        total2 += all2
        if all2 > 0:
            worst = max(worst, math.sqrt(tail2 / all2))
    info = {
        "projected": True,
        "projection_error": math.sqrt(err2),  # sqrt(Σ_modules ||W' − B'A'||_F²)
        "projection_relative_error": math.sqrt(err2 / total2) if total2 > 0 else 0.0,
        "projection_worst_module_relative": worst,
    }
    return out, info
