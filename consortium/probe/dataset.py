"""The probe's labelled set: ΔLoRA of simulated benign and malicious clients (every attack we have), on
several domains and seeds, over a few rounds of an honest global trajectory (so late-round drift is in it).

One base model is loaded once; every client trains with the run config's LoRA and local-training settings
(the probe is only valid for that layout). A sample's vector is, per `level`: the submitted update
('client'), every k-th-step snapshot ('step') or the shadow branch's delta ('shadow', trained from the
fixed initial adapter at `probe.shadow_lr`). Attacks that do not train (noise, free rider) have no step
or shadow deltas: at those levels they are caught by the missing evidence, not by the probe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from consortium.attacks import (
    AdaptiveBackdoorAttack,
    Adversary,
    AttackSpec,
    BackdoorAttack,
    FreeRiderAttack,
    HarmfulAttack,
    LabelFlipAttack,
    NoiseAttack,
    RoundView,
    ScaleAttack,
    SybilAttack,
)
from consortium.config import RunConfig
from consortium.data import Example, build_corpus
from consortium.local.params import lora_spec, shadow_params, train_params
from consortium.local.participant import LocalModel
from consortium.local.seeds import local_seed
from consortium.train import prepare_model

# one configuration per attack kind; scale boosts a backdoor 5x (a 'replace the model' factor would be
# trivially large), noise sends N(0, 1e-3^2) per coordinate, the free rider replays the last global step
DEFAULT_ATTACKS: tuple[AttackSpec, ...] = (
    BackdoorAttack(),
    AdaptiveBackdoorAttack(),
    ScaleAttack(factor=5.0),
    LabelFlipAttack(),
    NoiseAttack(std=1e-3),
    FreeRiderAttack(mode="stale"),
    SybilAttack(),
    HarmfulAttack(),
)


@dataclass(frozen=True)
class Sample:
    """One labelled ΔLoRA: label 1 = malicious; `attack` is 'benign' or the attack kind."""

    vec: torch.Tensor
    label: int
    attack: str
    domain: str
    seed: int
    round: int
    update: torch.Tensor | None = None  # shadow level: the submitted update the shadow delta stands for


@dataclass
class Clients:
    """The loaded model and what every simulated client needs to train."""

    cfg: RunConfig
    trainer: Any
    initial: torch.Tensor
    layout: list[tuple[str, tuple[int, ...]]]
    encode: Callable[[list[Example]], list[Any]]


def load_clients(cfg: RunConfig) -> Clients:
    """The run's model as every participant builds it (`LocalModel`: the configured dtype, so a bf16
    base trains as in the run) with the run's speed settings (threads, attention, prefix cache): the
    simulated updates are the ones the run's participants send, at the run's cost per step. (It once
    loaded the base in fp32 whatever `model.dtype` said: slower a step on the bench preset, and
    updates of another numeric path than the ones the probe then scores.)"""
    local = LocalModel(cfg, lora_spec(cfg))
    prepare_model(local.model, train_params(cfg, 1))
    return Clients(cfg, local.trainer, local.initial, local.layout, local.encode)


def collect(
    clients: Clients,
    seeds: Sequence[int],
    level: str = "client",
    attacks: Sequence[AttackSpec] = DEFAULT_ATTACKS,
    rounds: int | None = None,
    on_sample: Callable[[], None] | None = None,
) -> list[Sample]:
    """Labelled samples for every (seed, round, domain client, attack); deterministic per seed."""
    cfg, trainer = clients.cfg, clients.trainer
    domains = list(cfg.data.domains)
    params, shadow = train_params(cfg, cfg.train.local_steps), shadow_params(cfg)
    every = cfg.probe.step_every if level == "step" else 0
    out: list[Sample] = []
    for seed in seeds:
        corpus = build_corpus(domains, cfg.data.n_train, 1, seed)
        shards = {d: [e for e in corpus.train if e.domain == d] for d in domains}
        encoded = {d: clients.encode(s) for d, s in shards.items()}
        start, last_step = clients.initial.clone(), None
        for rnd in range(rounds or cfg.probe.train_rounds):

            def run(
                data: list, idx: int, rnd: int = rnd, start: torch.Tensor = start, seed: int = seed
            ) -> tuple[torch.Tensor, list]:
                res = trainer.train(start, data, params, local_seed(seed, rnd, idx), every)
                if level == "client":
                    return res.delta, [res.delta]
                if level == "step":
                    return res.delta, res.snapshots or [res.delta]
                return res.delta, [
                    trainer.train(clients.initial, data, shadow, local_seed(seed, rnd, idx)).delta
                ]

            benign = []
            for i, d in enumerate(domains):
                delta, vecs = run(encoded[d], i)
                benign.append(delta)
                out += [
                    Sample(v, 0, "benign", d, seed, rnd, delta if level == "shadow" else None) for v in vecs
                ]
                if on_sample:
                    on_sample()
            for j, spec in enumerate(attacks):
                d = domains[(j + seed + rnd) % len(domains)]
                adv = Adversary(f"probe-attacker{j}", spec, shards[d], seed)
                poisoned = clients.encode(adv.poisoned) if adv.poisoned is not None else []
                view = RoundView(rnd, len(domains) + 1, cfg.server_lr, start.numel(), last_step)
                trained: list[list[torch.Tensor]] = []

                def fit(data: list, trained: list = trained, k: int = len(domains) + j) -> torch.Tensor:
                    delta, vecs = run(data, k)
                    trained.append(vecs)
                    return delta

                update = adv.craft(
                    view, lambda fit=fit, e=encoded[d]: fit(e), lambda fit=fit, p=poisoned: fit(p)
                )
                vecs = [update] if level == "client" else (trained[-1] if trained else [])
                out += [
                    Sample(v, 1, spec.kind, d, seed, rnd, update if level == "shadow" else None) for v in vecs
                ]
                if on_sample:
                    on_sample()
            step = torch.stack(benign).mean(0) * cfg.server_lr
            start, last_step = start + step, step
    return out
