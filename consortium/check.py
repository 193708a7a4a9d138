"""`consortium check`: validate a run config without running it.

A run refuses a bad config only after the model is loaded or, worse, after the run directory exists;
a consortium that agrees on a config before anyone trains wants the refusal first. `check_config` does
every refusal a run would make that needs no model: the config's own validation (done by `load_config`),
the privacy calibration, the data (built-in corpus, JSONL files, the partition and the chain's held-out
split), and the probe artifact's hash. It loads no model and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from consortium.config import RunConfig, blocking_seats, config_digest
from consortium.defense import needs
from consortium.local.data import chain_split, prepare_data
from consortium.privacy.tracker import resolve
from consortium.probe import check_fitted_for, load_file


@dataclass(frozen=True)
class CheckedConfig:
    """What `consortium check` prints: the resolved config, its digest, the examples per participant
    and a one-line description of the protocol / aggregator / probe / privacy combination."""

    config: RunConfig
    digest: str
    summary: str
    shard_sizes: list[int]
    warnings: tuple[str, ...] = ()


def _seats(cfg: RunConfig, proposers_vote: bool) -> tuple[int, int, int, int]:
    """(proposers, voters, k, seats) of a chain round: with equal stakes, colluders in k of the seats
    voting block it."""
    proposers, voters = cfg.chain.roles(cfg.participants)
    return proposers, voters, *blocking_seats(proposers, voters, proposers_vote)


def _liveness_warnings(cfg: RunConfig) -> tuple[str, ...]:
    """A chain config whose rounds one colluding voter can stall: worth saying before anyone stakes."""
    if cfg.protocol != "chain":
        return ()
    proposers, voters, k, seats = _seats(cfg, cfg.chain.proposers_vote)
    if k > 1:
        return ()
    return (
        f"one colluding voter of the {seats} voting seats can block every honest candidate "
        f"({proposers} proposers, {voters} voters of {cfg.participants} equal stakes; a winner needs over a "
        "third of the draw's weight and over half of the revealed votes); raise chain.n_voters or set "
        "chain.proposers_vote",
    )


def _screen_warnings(cfg: RunConfig) -> tuple[str, ...]:
    """A screen (a probe, or a rule other than the public weights' mean) on chain without the proposers
    voting: a colluding proposer's own unscreened candidate gives the coalition something to vote for,
    and its voter seats then block the screened one. Measured: 3-5 of 10 rounds rejected at 30%
    (docs/results.md)."""
    if cfg.protocol != "chain" or cfg.chain.proposers_vote:
        return ()
    screens = [f"probe {cfg.probe.artifact[:12]}"] if cfg.probe.artifact else []
    if not needs(cfg.aggregator).weighted_mean:  # the public weights' mean is what a colluder proposes
        screens.append(f"aggregator {cfg.aggregator!r}")
    if not screens:
        return ()
    _, _, k, seats = _seats(cfg, False)
    *_, k_committee, committee = _seats(cfg, True)
    return (
        f"the round's updates are screened ({', '.join(screens)}) and the proposers do not vote: "
        f"colluders in {k} of the {seats} voter seats can vote for a colluding proposer's unscreened "
        "candidate and block every screened one (bench preset, 30% backdoor behind the probe: "
        "3-5 of 10 rounds rejected, docs/results.md); set chain.proposers_vote "
        f"(then {k_committee} of {committee} seats)",
    )


def describe(cfg: RunConfig) -> str:
    """One line naming what the run will do, in the terms the README uses."""
    if cfg.protocol == "chain":
        proposers, voters, k, seats = _seats(cfg, cfg.chain.proposers_vote)
        protocol = (
            f"chain protocol (the contract drives the rounds: {proposers} proposers and {voters} voters "
            f"drawn per round of {cfg.participants} participants"
            + (", the proposers voting too" if cfg.chain.proposers_vote else "")
            + f"; with equal stakes, colluders in {k} of the {seats} voting seats block a round)"
        )
    else:
        protocol = f"centralised baseline (all {cfg.participants} participants train every round, no vote)"
    parts = [protocol, f"aggregator {cfg.aggregator!r}", f"lora {cfg.lora.variant!r} r={cfg.lora.r}"]
    pc, pv = cfg.probe, cfg.privacy
    parts.append(f"probe {pc.artifact[:12]} ({pc.level} level)" if pc.artifact else "no probe")
    parts.append(f"client-level DP ({pv.mode}, clip {pv.clip})" if pv.on else "no DP")
    if cfg.attacks:
        parts.append("attacks: " + ", ".join(f"{a.kind} {a.fraction:g}" for a in cfg.attacks))
    return f"{cfg.model.name}, {cfg.rounds} rounds; " + "; ".join(parts)


def check_config(cfg: RunConfig) -> CheckedConfig:
    """Every refusal a run would make before loading its model. Raises DataError or ProbeError."""
    resolved = resolve(cfg)
    shards, _test = prepare_data(resolved)
    if resolved.protocol == "chain":
        for i, shard in enumerate(shards):
            chain_split(shard, resolved, i)  # DataError when a shard cannot spare a held-out example
    if resolved.probe.artifact is not None:
        pc = resolved.probe
        check_fitted_for(
            load_file(Path(pc.dir or ".") / f"{pc.artifact}.safetensors", pc.artifact), pc, pc.artifact
        )
    return CheckedConfig(
        resolved,
        config_digest(resolved),
        describe(resolved),
        [len(s) for s in shards],
        _liveness_warnings(resolved) + _screen_warnings(resolved),
    )
