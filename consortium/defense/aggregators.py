"""Aggregation entry points: `stack_updates`, `check_inputs` and `aggregate(name, updates, weights, ...)`.

Rules are pure registered functions `fn(updates [n, d], weights [n], ctx) -> AggregateResult` (see
`consortium.defense.rules`), selected by `aggregator` in the run config. They are deterministic (same
inputs on the same device -> bit-identical outputs) so that anyone can recompute an aggregate from the
public records. Input validation happens here, and a bad update is refused with the client's name, never
averaged; whether the updates are finite is settled by the rule's own pass where it makes one
(`consortium.defense.finite`), so that it costs no pass of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from consortium.defense import rules as _rules  # registers the rules
from consortium.defense.core import (
    AGGREGATORS,
    DEFAULT_PARAMS,
    NEEDS,
    AggregateResult,
    DefenseParams,
    Rule,
    RuleContext,
    RuleNeeds,
    UpdateError,
    needs,
    register,
)
from consortium.defense.finite import FiniteCheck, finite_rows

fedavg = _rules.fedavg

__all__ = [
    "AGGREGATORS",
    "NEEDS",
    "AggregateResult",
    "DefenseParams",
    "Rule",
    "RuleContext",
    "RuleNeeds",
    "UpdateError",
    "aggregate",
    "check_inputs",
    "fedavg",
    "needs",
    "register",
    "stack_updates",
]


def stack_updates(
    updates: Mapping[str, torch.Tensor], d: int | None = None
) -> tuple[list[str], torch.Tensor]:
    """Validate each client's flat update and stack them in sorted client-name order -> (names, [n, d]).

    Each update must be a 1-D floating tensor with the dtype and device of the first (in sorted order), of
    length `d` (or that of the first) and all finite. Raises UpdateError naming the client, e.g.
    "update from 'org3': contains NaN or Inf".
    """
    if not updates:
        raise ValueError("no updates: nothing to stack (empty)")
    names = sorted(updates)
    first = updates[names[0]]
    for name in names:
        u = updates[name]
        where = f"update from {name!r}"
        if not isinstance(u, torch.Tensor):
            raise UpdateError(f"{where}: expected a torch.Tensor, got {type(u).__name__}")
        if u.ndim != 1:
            raise UpdateError(f"{where}: expected a flat 1-D tensor, got shape {tuple(u.shape)}")
        if not u.is_floating_point():
            raise UpdateError(f"{where}: must be floating point, got {u.dtype}")
        if u.dtype != first.dtype:
            raise UpdateError(f"{where}: dtype {u.dtype} differs from {first.dtype} of {names[0]!r}")
        if u.device != first.device:
            raise UpdateError(f"{where}: on {u.device}, but {names[0]!r} is on {first.device}")
        want = d if d is not None else first.numel()
        if u.numel() != want:
            raise UpdateError(f"{where}: has {u.numel()} elements, expected {want}")
        if not bool(torch.isfinite(u).all()):
            raise UpdateError(f"{where}: contains NaN or Inf")
    return names, torch.stack([updates[name] for name in names])


def _names(clients: Sequence[str] | None, n: int) -> tuple[str, ...]:
    if clients is None:
        return tuple(f"client {i}" for i in range(n))
    names = tuple(clients)
    if len(names) != n:
        raise ValueError(f"clients has {len(names)} names for {n} updates")
    return names


def check_layout(
    updates: torch.Tensor, weights: torch.Tensor, clients: Sequence[str] | None = None
) -> tuple[tuple[str, ...], torch.Tensor]:
    """The checks that come before finiteness: updates a floating [n, d] tensor (n, d >= 1), weights of
    shape [n], one name per update. Returns the names (default 'client 0'..) and the weights as given."""
    if not isinstance(updates, torch.Tensor) or updates.ndim != 2:
        shape = tuple(updates.shape) if isinstance(updates, torch.Tensor) else type(updates).__name__
        raise ValueError(f"updates must be a 2-D [n, d] tensor, got {shape}")
    n, d = updates.shape
    if n == 0:
        raise ValueError("updates is empty: no participant to aggregate")
    if d == 0:
        raise ValueError("updates is empty: zero-length update vectors")
    weights = torch.as_tensor(weights)
    if weights.shape != (n,):
        raise ValueError(f"weights must have shape ({n},), got {tuple(weights.shape)}")
    if not updates.is_floating_point():
        raise ValueError(f"updates must be floating point, got {updates.dtype}")
    return _names(clients, n), weights


def check_weights(weights: torch.Tensor, names: tuple[str, ...]) -> torch.Tensor:
    """Weights as a float64 CPU vector, each finite and >= 0, not all zero."""
    w = weights.detach().to("cpu", torch.float64)
    bad_w = ~torch.isfinite(w) | (w < 0)
    if bool(bad_w.any()):
        i = int(torch.nonzero(bad_w)[0])
        raise UpdateError(f"weight of {names[i]!r} must be finite and non-negative, got {float(w[i])}")
    if not bool((w > 0).any()):
        raise ValueError("weights are all zero; they must be non-negative and not all zero")
    return w


def check_inputs(
    updates: torch.Tensor,
    weights: torch.Tensor,
    clients: Sequence[str] | None = None,
    chunk_elems: int = DEFAULT_PARAMS.chunk_elems,
) -> tuple[tuple[str, ...], torch.Tensor]:
    """Shape, dtype and finiteness checks shared by every rule: bad input is refused, not averaged.

    Returns the client names and the weights as a float64 CPU vector. Errors about one client's update or
    weight are UpdateError (a ValueError) naming it. (`aggregate` makes the same checks, in this order of
    precedence, but settles finiteness inside the rule's own pass: `consortium.defense.finite`.)
    """
    names, weights = check_layout(updates, weights, clients)
    FiniteCheck(updates, names, chunk_elems).refuse_bad_rows()
    return names, check_weights(weights, names)


def _check_root(root: torch.Tensor, d: int) -> None:
    if not isinstance(root, torch.Tensor) or root.shape != (d,):
        shape = tuple(root.shape) if isinstance(root, torch.Tensor) else type(root).__name__
        raise ValueError(f"root_update must be a 1-D tensor of length {d}, got {shape}")
    if not root.is_floating_point():
        raise ValueError(f"root_update must be floating point, got {root.dtype}")
    if not bool(torch.isfinite(root).all()):
        raise ValueError("root_update contains NaN or Inf")


def _check_history(history: torch.Tensor, shape: torch.Size, names: tuple[str, ...], chunk: int) -> None:
    if not isinstance(history, torch.Tensor) or history.shape != shape:
        got = tuple(history.shape) if isinstance(history, torch.Tensor) else type(history).__name__
        raise ValueError(f"history must have the updates' shape {tuple(shape)}, got {got}")
    if not history.is_floating_point():
        raise ValueError(f"history must be floating point, got {history.dtype}")
    ok = finite_rows(history, chunk)
    if not bool(ok.all()):
        raise UpdateError(f"history of {names[int(torch.nonzero(~ok)[0])]!r}: contains NaN or Inf")


def aggregate(
    name: str,
    updates: torch.Tensor,
    weights: torch.Tensor,
    *,
    params: DefenseParams = DEFAULT_PARAMS,
    clients: Sequence[str] | None = None,
    seed: int = 0,
    root_update: torch.Tensor | None = None,
    history: torch.Tensor | None = None,
) -> AggregateResult:
    """Run the named rule; the one entry point protocol code and the audit use.

    updates [n, d] (float32 or float64, any device; the work runs there), weights [n] sample counts (>= 0,
    not all zero). clients: names for error messages (default 'client 0'..'client n-1'). seed: the round's
    public randomness (FLAME's noise). root_update: FLTrust's root update [d]. history: FoolsGold's
    per-client accumulated past updates [n, d] (None = use the current updates).
    """
    try:
        fn = AGGREGATORS[name]
    except KeyError:
        raise ValueError(f"unknown aggregator {name!r}; known: {', '.join(sorted(AGGREGATORS))}") from None
    if not isinstance(params, DefenseParams):
        raise TypeError(f"params must be a DefenseParams, got {type(params).__name__}")
    names, weights = check_layout(updates, weights, clients)
    check = FiniteCheck(updates.detach(), names, params.chunk_elems)
    try:
        w = check_weights(weights, names)
        if root_update is not None:
            _check_root(root_update, updates.shape[1])
        if history is not None:
            _check_history(history, updates.shape, names, params.chunk_elems)
        ctx = RuleContext(
            params=params,
            clients=names,
            seed=int(seed),
            root_update=root_update,
            history=history,
            finite=check,
        )
        with torch.no_grad():
            result = fn(updates.detach(), w, ctx)
        check.finish()
    except Exception as err:  # a non-finite update is named first, as when it was checked before all else
        if not isinstance(err, UpdateError) or not check.checked:
            check.refuse_bad_rows()
        raise
    return result
