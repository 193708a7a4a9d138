"""The participant side (`consortium.local`): a real node's distributed-DP noise share is secret."""

from __future__ import annotations

import pytest
import torch

from consortium.config import load_config
from consortium.local.data import participant_data
from consortium.local.params import lora_spec, train_params
from consortium.local.participant import LocalModel, LocalParticipant
from consortium.local.privacy import dp_share
from consortium.local.seeds import local_seed, simulated_noise_seed

DP = [
    "participants=4",
    "data.n_train=16",
    "data.n_test=2",
    "train.local_steps=1",
    'privacy.mode="distributed"',
    "privacy.clip=1.0",
    "privacy.noise_multiplier=1.0",
    "privacy.delta=1e-5",
]


@pytest.fixture(scope="module")
def node_side() -> tuple[LocalParticipant, torch.Tensor]:
    cfg = load_config(preset="smoke", overrides=[*DP, 'protocol="chain"'])
    model = LocalModel(cfg, lora_spec(cfg))
    train, holdout = participant_data(cfg, 1)
    p = LocalParticipant(model, 1, train_params(cfg, cfg.train.local_steps), train, holdout)
    return p, model.initial


def test_a_nodes_noise_share_cannot_be_recomputed_from_the_public_config(
    node_side: tuple[LocalParticipant, torch.Tensor],
) -> None:
    """Training is seeded (the same update twice); the noise share is not: two trainings of the same
    round differ, and neither equals the share the config alone would give (what the simulation adds,
    and what a node added before the share's seed came from the OS)."""
    p, start = node_side
    cfg = p.model.cfg
    first, n = p.train(0, start)
    second, _ = p.train(0, start)
    assert n == len(p.examples)
    raw = p.model.trainer.train(start, p.encoded, p.params, local_seed(cfg.seed, 0, 1)).delta
    public_guess = dp_share(raw, cfg, simulated_noise_seed(cfg.seed, 0, 1))
    assert not torch.equal(first, second)
    assert not torch.equal(first, public_guess) and not torch.equal(second, public_guess)


def test_the_simulation_seeds_its_shares_from_the_config() -> None:
    """The simulation's share is reproducible (a run replays bit for bit)."""
    cfg = load_config(preset="smoke", overrides=DP)
    delta = torch.randn(64, generator=torch.Generator().manual_seed(0))
    a = dp_share(delta, cfg, simulated_noise_seed(cfg.seed, 2, 3))
    b = dp_share(delta, cfg, simulated_noise_seed(cfg.seed, 2, 3))
    other = dp_share(delta, cfg, simulated_noise_seed(cfg.seed, 2, 4))
    assert torch.equal(a, b) and not torch.equal(a, other)
