"""Deploying the contract: its parameters from a run config, for the simulation and for real nodes
(`consortium chain up` / `chain deploy`).

The simulation's `chain_params` size each phase to one transaction per block (the embedded EVM mines on
demand). Real nodes share a chain that mines on a clock (anvil `--block-time 1`, or any public chain),
so each window must also cover the work done in it: training in the commit window, judging in the vote
commit window. `node_params` keeps the sim's roles, stakes and slashes and widens the windows.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import tomli_w

from consortium.chain import ChainClient, Params, wei
from consortium.config import RunConfig, to_toml_dict

__all__ = ["chain_params", "config_params", "deploy_for_nodes", "node_params", "write_deployment"]


def chain_params(
    *,
    participants: int,
    proposers: int,
    voters: int,
    min_stake: float,
    reward_per_round: float,
    slash_rejected_bps: int,
    slash_minority_bps: int,
    slash_no_show_bps: int,
    quorum_bps: int,
    proposal_bond_bps: int = 0,
    proposers_vote: bool = False,
) -> Params:
    """Deployment parameters whose windows fit one transaction per block (the embedded EVM's pace):
    every participant commits and reveals a seed, each proposer commits, two candidates, each voting
    seat (the voters, and the proposers with `proposers_vote`) commits and reveals."""
    seats = voters + (proposers if proposers_vote else 0)
    return Params(
        min_stake=wei(min_stake),
        seed_blocks=participants + 1,
        commit_blocks=proposers + 1,
        candidate_blocks=3,
        vote_commit_blocks=seats + 1,
        vote_reveal_blocks=seats + 1,
        exit_cooldown=4,
        n_proposers=proposers,
        n_voters=voters,
        reward_per_round=wei(reward_per_round),
        slash_rejected_bps=slash_rejected_bps,
        slash_minority_bps=slash_minority_bps,
        slash_no_show_bps=slash_no_show_bps,
        quorum_bps=quorum_bps,
        proposal_bond_bps=proposal_bond_bps,
        proposers_vote=proposers_vote,
    )


def config_params(cfg: RunConfig) -> Params:
    """`chain_params` for a run config: its roles, stakes, rewards, slashes and quorum."""
    cc = cfg.chain
    proposers, voters = cc.roles(cfg.participants)
    return chain_params(
        participants=cfg.participants,
        proposers=proposers,
        voters=voters,
        min_stake=cc.min_stake,
        reward_per_round=cc.reward_per_round,
        slash_rejected_bps=cc.slash_rejected_bps,
        slash_minority_bps=cc.slash_minority_bps,
        slash_no_show_bps=cc.slash_no_show_bps,
        quorum_bps=cc.quorum_bps,
        proposal_bond_bps=cc.proposal_bond_bps,
        proposers_vote=cc.proposers_vote,
    )


def node_params(
    cfg: RunConfig, phase_blocks: int = 3, commit_blocks: int = 10, vote_blocks: int = 4
) -> Params:
    """The sim's deployment parameters (roles, stake, rewards, slashes) with windows a node can meet:
    `phase_blocks` for seed, candidate and vote reveal, `commit_blocks` for training and uploading,
    `vote_blocks` for judging (each never shorter than the sim's one-transaction-per-block window)."""
    p = config_params(cfg)
    # with interval mining many transactions share a block, so the sim's per-transaction sizing of the
    # seed window (participants + 1) is not needed; the others only grow
    return replace(
        p,
        seed_blocks=phase_blocks,
        commit_blocks=max(p.commit_blocks, commit_blocks),
        candidate_blocks=max(p.candidate_blocks, phase_blocks),
        vote_commit_blocks=max(p.vote_commit_blocks, vote_blocks),
        vote_reveal_blocks=max(p.vote_reveal_blocks, phase_blocks),
    )


def deploy_for_nodes(
    backend: Any, cfg: RunConfig, params: Params, genesis: bytes | str, account: Any = None
) -> ChainClient:
    """Deploy with the run's initial adapter as genesis (`node.build.genesis_digest(cfg)`: every node
    derives the same from the config and refuses a deployment whose genesis differs) and the config's
    reward pool. The contract refuses an empty genesis: nobody can set it later."""
    return ChainClient.deploy(
        backend, params, genesis_hash=genesis, fund=wei(cfg.chain.reward_pool), account=account
    )


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def write_deployment(
    out: Path,
    rpc_url: str,
    client: ChainClient,
    cfg: RunConfig,
    store: str,
    keys: list[str] | None = None,
    dev_chain: bool = False,
) -> dict[str, Any]:
    """Write what nodes and auditors need into `out`: run.toml (the resolved run config: every node and
    the audit read this one file, so their config digests agree), chain.json (URL, contract, params),
    and, given dev `keys` (one per participant), keys/orgN.key (0600) and a ready nodeN.toml each."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.toml").write_text(tomli_w.dumps(to_toml_dict(cfg)))
    info = {
        "rpc_url": rpc_url,
        "contract": client.contract_address,
        "deploy_block": client._s.deploy_block,
        "params": client.params().__dict__,
        "store": store,
        "run_config": str(out / "run.toml"),
    }
    for i, key in enumerate(keys or []):
        _write_private(out / "keys" / f"org{i}.key", key + "\n")
        node = {
            "rpc_url": rpc_url,
            "contract": client.contract_address,
            "store": store,
            "run_config": "run.toml",
            "participant_index": i,
            "key_file": f"keys/org{i}.key",
            "dev_chain": dev_chain,
        }
        (out / f"node{i}.toml").write_text(tomli_w.dumps(node))
    tmp = out / ".chain.json.tmp"
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    tmp.replace(out / "chain.json")  # written last: its presence means the deployment is ready
    return info
