"""The simulation's report.json: its skeleton before the first round, one round's entry (traffic, the
in-process protocol's record, the privacy charge) and the privacy header. The round loop
(`consortium.sim`) fills it; `consortium.report` renders it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from consortium.config import RunConfig
from consortium.privacy.tracker import PrivacyTracker, planned_updates
from consortium.protocol import LedgerRound
from consortium.round.pipeline import Candidate
from consortium.store import tensors_to_bytes
from consortium.vector import Layout, flat_to_state


def empty_report(
    cfg: RunConfig,
    requested: Any,
    backend: str,
    participants: Sequence[Any],
    initial: torch.Tensor,
    layout: Layout,
    speed: dict[str, Any],
) -> dict[str, Any]:
    """The report before the first round: what runs, who takes part, the bytes each round moves.
    `requested` is the privacy table as the user wrote it (target_epsilon before resolving)."""
    blob_bytes = len(tensors_to_bytes(flat_to_state(initial, layout)))
    return {
        "name": cfg.name,
        "status": "running",
        "model": cfg.model.name,
        "lora_variant": cfg.lora.variant,
        "protocol": cfg.protocol,
        "backend": backend,
        "aggregator": cfg.aggregator,
        "server_lr": cfg.server_lr,
        "participants": cfg.participants,
        "participant_domains": {p.name: p.domains for p in participants},
        "participant_examples": {p.name: len(p.examples) for p in participants},
        "attackers": {p.name: p.adversary.spec.kind for p in participants if p.adversary},
        "attacks": [a.__dict__ | {"kind": a.kind} for a in cfg.attacks],
        "defense": cfg.defense.__dict__,
        "backdoor": {},
        "rounds": cfg.rounds,
        "rounds_completed": 0,
        "accuracy": {},
        "cross_domain": {},
        "rounds_detail": [],
        "losses": {"federated": {}, "isolated": {}},
        "bytes": {
            "trainable_params": int(initial.numel()),
            # the safetensors blob (float32 payload + header) each way; payload = communicated params × 4
            "payload_per_participant_per_round": 4 * int(initial.numel()),
            "upload_per_participant_per_round": blob_bytes,
            "download_per_participant_per_round": blob_bytes,
        },
        "timings": {},
        "speed": speed,
        "global_adapter": None,
        "privacy": privacy_header(cfg, requested),
    }


def privacy_header(cfg: RunConfig, requested: Any) -> dict[str, Any] | None:
    """The report's privacy settings (None when off); per-round ε is in each `rounds_detail` entry."""
    pv = cfg.privacy
    if not pv.on:
        return None
    return pv.model_dump(mode="json") | {
        "target_epsilon": requested.target_epsilon,
        "planned_updates_per_round": planned_updates(cfg),
        "epsilon": 0.0,
        "stopped": None,
    }


def round_bytes(per_round: dict[str, int], uploaders: int) -> dict[str, int]:
    """One round's traffic: each committer uploads one update blob; every participant downloads the global."""
    up = per_round["upload_per_participant_per_round"]
    return {
        "upload_per_participant": up,
        "download_per_participant": per_round["download_per_participant_per_round"],
        "payload_per_participant": per_round["payload_per_participant_per_round"],
        "uploaders": uploaders,
        "upload_total": up * uploaders,
    }


def central_detail(rec: LedgerRound, cand: Candidate) -> dict[str, Any]:
    """One round of the in-process protocol as the report records it (the chain runner has its own)."""
    return {
        "seed": rec.seed,
        "global_in": rec.global_in,
        "global_out": rec.global_out,
        "root": rec.root,
        "commitments": [c.__dict__ for c in rec.commitments],
        "evidence": rec.evidence,  # probe step / shadow snapshots committed with the updates
        **cand.summary(),
    }


def charge(tracker: PrivacyTracker, detail: dict[str, Any]) -> dict[str, Any]:
    """Charge the round to every participant whose update was committed (screened ones too: their
    update shaped the screen's decision, and in distributed mode it is public)."""
    entered = [c["participant"] for c in detail.get("commitments", [])]
    dp_info = (detail.get("info") or {}).get("dp")
    return tracker.record(entered, dp_info)
