"""Defences: robust aggregation rules applied to the committed updates, each registered with what it
needs from the round (`RuleNeeds`: a root update, the proposers' history, being a weighted mean...).
The probe (`consortium.probe`) and the update screen (`defense.screen`) run before the rule, DP
(`consortium.privacy`) around it, all inside `consortium.round.pipeline.compute_candidate`.

Torch (plus scikit-learn for FLAME) only: nothing here imports pydantic or the rest of `consortium`, so the
rules run on a bare GPU machine.
"""

from consortium.defense.aggregators import (
    AGGREGATORS,
    NEEDS,
    AggregateResult,
    DefenseParams,
    Rule,
    RuleContext,
    RuleNeeds,
    UpdateError,
    aggregate,
    check_inputs,
    needs,
    register,
    stack_updates,
)

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
    "needs",
    "register",
    "stack_updates",
]
