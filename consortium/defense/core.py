"""Re-exports of the shared pieces of the defences, under the names they have always had here.

The pieces live in modules with one job each: `params` (knobs, context, result, error), `registry` (rules
and their needs), `chunks` (column chunks, the thread pool), `kernels` (Gram matrix, norms, weighted sums)
and `order_stats` (median, trimmed mean, Bulyan's second stage).
"""

from consortium.defense.chunks import CACHE_ELEMS, col_chunks, map_chunks, row_blocks, work_chunks
from consortium.defense.kernels import (
    cosine_from_gram,
    exact_norms_of,
    exact_row_norms,
    gram,
    median_of,
    row_norms,
    sq_dists,
    weighted_sum,
)
from consortium.defense.order_stats import closest_to_median_mean, kept_counts, middle_mean, sorted_rows
from consortium.defense.params import (
    DEFAULT_PARAMS,
    AggregateResult,
    DefenseParams,
    RuleContext,
    UpdateError,
)
from consortium.defense.registry import AGGREGATORS, NEEDS, Rule, RuleNeeds, needs, register

__all__ = [
    "AGGREGATORS",
    "CACHE_ELEMS",
    "DEFAULT_PARAMS",
    "NEEDS",
    "AggregateResult",
    "DefenseParams",
    "Rule",
    "RuleContext",
    "RuleNeeds",
    "UpdateError",
    "closest_to_median_mean",
    "col_chunks",
    "cosine_from_gram",
    "exact_norms_of",
    "exact_row_norms",
    "gram",
    "kept_counts",
    "map_chunks",
    "median_of",
    "middle_mean",
    "needs",
    "register",
    "row_blocks",
    "row_norms",
    "sorted_rows",
    "sq_dists",
    "weighted_sum",
    "work_chunks",
]
