"""A participant's seeds: reproducible ones for training, and the secret one of its DP noise share."""

from __future__ import annotations

import secrets


def local_seed(run_seed: int, rnd: int, index: int) -> int:
    """One independent, reproducible seed per (run, round, participant) for local training."""
    return (run_seed * 1_000_003 + rnd * 10_007 + index) % (2**31)


def simulated_noise_seed(run_seed: int, rnd: int, index: int) -> int:
    """The noise-share seed of a *simulated* participant: derived from the config so that a simulation
    replays bit for bit (not the training seed). Never for a real node: anyone holding the config could
    recompute the share and subtract it."""
    return local_seed(run_seed, rnd, index) * 7919 + 104_729


def private_noise_seed() -> int:
    """A real node's noise-share seed: 63 bits from the operating system, kept by nobody."""
    return secrets.randbits(63)
