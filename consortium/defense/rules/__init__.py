"""The registered aggregation rules: `fn(updates [n, d], weights [n], ctx) -> AggregateResult`.

Each rule is a pure, deterministic function of its inputs (FLAME's noise comes from `ctx.seed`, the round's
public randomness), so anyone can recompute an aggregate from the public records. Inputs arrive validated
by `aggregate`: `updates` is a finite floating [n, d] tensor on any device, `weights` the clients' sample
counts as a float64 CPU [n] vector (>= 0, not all zero).

Who holds FLTrust's root data set in a trustless consortium? Nobody privately: a small, clean root set is
published with the run config and pinned by its hash, so every participant and auditor can recompute the
root update. Its training run is committed as a blob like any client update, and since the root set, the
seed and the training code are public, anyone can re-run it and check the blob before the aggregate is
finalised. That keeps FLTrust's trust anchor verifiable instead of resting on an honest server. The cost:
the root set must be representative of the task (FLTrust's guarantee degrades when the root distribution
drifts from the clients'), and it is public, so it cannot contain private data.
"""

import importlib

# Imported in this order so that `AGGREGATORS` lists fedavg first, then the robust rules, as it always has.
RULE_MODULES = ("averaging", "coordinate", "krum", "clipping", "similarity", "sign_vote")
for _module in RULE_MODULES:
    importlib.import_module(f"{__name__}.{_module}")

from consortium.defense.rules.averaging import fedavg  # noqa: E402
from consortium.defense.rules.clipping import flame, norm_bound  # noqa: E402
from consortium.defense.rules.coordinate import median, trim_count, trimmed_mean  # noqa: E402
from consortium.defense.rules.krum import KrumScorer, bulyan, bulyan_f, krum, krum_f, multi_krum  # noqa: E402
from consortium.defense.rules.sign_vote import rlr  # noqa: E402
from consortium.defense.rules.similarity import fltrust, foolsgold, foolsgold_scores  # noqa: E402

__all__ = [
    "RULE_MODULES",
    "KrumScorer",
    "bulyan",
    "bulyan_f",
    "fedavg",
    "flame",
    "fltrust",
    "foolsgold",
    "foolsgold_scores",
    "krum",
    "krum_f",
    "median",
    "multi_krum",
    "norm_bound",
    "rlr",
    "trim_count",
    "trimmed_mean",
]
