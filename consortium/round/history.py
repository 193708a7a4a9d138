"""The candidate pipeline's memory across rounds, grown from public records only.

Three parts of the pipeline look back: FoolsGold (each proposer's running sum of committed updates),
update-aware screens (the last change of the global model) and the probe (each proposer's past
verdicts). The in-process runner, the chain runner, `consortium node` and `consortium audit` all keep
this memory through this one class, so a third party replaying the records computes the same
candidates as the participants did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from consortium.defense import needs
from consortium.probe.defense import grow as grow_probe
from consortium.round.pipeline import AggregationRule, Candidate, compute_candidate
from consortium.round.records import Commitment, Layout, get_vector
from consortium.store import BlobStore


@dataclass
class PublicHistory:
    """What the rounds so far contribute to the next round's candidate."""

    store: BlobStore
    layout: Layout
    rule: AggregationRule
    sums: dict[str, torch.Tensor] = field(default_factory=dict)  # FoolsGold: proposer -> sum of updates
    last_step: torch.Tensor | None = None  # the last change of the global model
    probe: dict[str, list[Any]] = field(default_factory=dict)  # proposer -> probe observations

    def compute(
        self,
        global_in: str,
        commitments: Sequence[Commitment],
        seed: int,
        *,
        root: str | None = None,
        evidence: Mapping[str, str] | None = None,
    ) -> Candidate:
        """The round's candidate given every earlier round (pure: the memory is not changed)."""
        return compute_candidate(
            self.store,
            self.layout,
            global_in,
            commitments,
            self.rule,
            seed=seed,
            root=root,
            history=self.sums if needs(self.rule.aggregator).history else None,
            last_step=self.last_step,
            probe_history=self.probe,
            evidence=evidence,
        )

    def grow(self, commitments: Sequence[Commitment], cand: Candidate | None) -> None:
        """Fold a round's committed updates, and the probe's verdicts on them, into the memory.

        FoolsGold's sums grow even when the candidate could not be computed (`cand` None): every
        committed update is history, whatever became of the round."""
        if cand is not None and cand.probe is not None:
            grow_probe(self.probe, cand.probe)
        if needs(self.rule.aggregator).history:
            for c in commitments:
                vec = get_vector(self.store, c.blob, self.layout)
                self.sums[c.participant] = self.sums.get(c.participant, torch.zeros_like(vec)) + vec

    def candidate(
        self,
        global_in: str,
        commitments: Sequence[Commitment],
        seed: int,
        *,
        root: str | None = None,
        evidence: Mapping[str, str] | None = None,
    ) -> Candidate:
        """`compute`, then `grow` by this round."""
        cand = self.compute(global_in, commitments, seed, root=root, evidence=evidence)
        self.grow(commitments, cand)
        return cand

    def moved(self, global_in: str, global_out: str | None) -> None:
        """The round's outcome: a new global model becomes the last step; otherwise it stays."""
        if global_out is not None and global_out != global_in:
            new, old = (get_vector(self.store, h, self.layout) for h in (global_out, global_in))
            self.last_step = new - old
