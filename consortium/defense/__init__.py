"""Defences: robust aggregation rules (and, later, probes) applied to the committed updates.

Torch (plus scikit-learn for FLAME) only: nothing here imports pydantic or the rest of `consortium`, so the
rules run on a bare GPU machine.
"""

from consortium.defense.aggregators import (
    AGGREGATORS,
    AggregateResult,
    DefenseParams,
    Rule,
    RuleContext,
    UpdateError,
    aggregate,
    check_inputs,
    register,
    stack_updates,
)

__all__ = [
    "AGGREGATORS",
    "AggregateResult",
    "DefenseParams",
    "Rule",
    "RuleContext",
    "UpdateError",
    "aggregate",
    "check_inputs",
    "register",
    "stack_updates",
]
