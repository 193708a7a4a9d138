"""Building a node from its `node.toml`: the run config, this organisation's data and model."""

from __future__ import annotations

import torch

from consortium.config import ConfigError, RunConfig
from consortium.data import DataError
from consortium.local.data import participant_data
from consortium.local.params import lora_spec, train_params
from consortium.local.participant import LocalModel, LocalParticipant
from consortium.node.agent import Node
from consortium.node_config import NodeConfig, NodeConfigError, load_key
from consortium.round.records import vector_hash
from consortium.rundir import load_run_config
from consortium.train import prepare_model


def make_node(ncfg: NodeConfig) -> Node:
    """Build the model and this node's data from the run config (participant `participant_index`'s
    share, as the simulation gives it, or `data_jsonl`), then connect. Raises NodeConfigError /
    NodeError."""
    torch.set_num_threads(1)
    assert ncfg.run_config is not None
    try:
        cfg = load_run_config(ncfg.run_config)
    except ConfigError as e:
        raise NodeConfigError(f"run_config: {e}") from None
    if cfg.protocol != "chain":
        raise NodeConfigError(f"{ncfg.run_config}: protocol is {cfg.protocol!r}; a node needs 'chain'")
    if ncfg.participant_index >= cfg.participants:
        raise NodeConfigError(
            f"participant_index {ncfg.participant_index}: the run config has {cfg.participants} participants"
        )
    load_key(ncfg)  # a bad key fails before the model is loaded
    try:
        train, holdout = participant_data(cfg, ncfg.participant_index, ncfg.data_jsonl)
    except DataError as e:
        raise NodeConfigError(str(e)) from None
    model = LocalModel(cfg, lora_spec(cfg))
    prepare_model(model.model, train_params(cfg, 1))  # threads, prefix cache: as the simulation does
    params = train_params(cfg, cfg.train.local_steps)
    return Node(ncfg, cfg, LocalParticipant(model, ncfg.participant_index, params, train, holdout))


def genesis_digest(cfg: RunConfig) -> str:
    """sha256 of the run's initial adapter blob: what the deployer puts into the contract and what every
    node and the audit recompute from the config (the model is built for it: seconds for SmolLM2)."""
    model = LocalModel(cfg, lora_spec(cfg))
    return vector_hash(model.initial, model.layout)
