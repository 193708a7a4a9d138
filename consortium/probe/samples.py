"""A cache of the probe's simulated samples, one file per (training settings, seed, level).

Simulating clients is what a probe costs: on SmolLM2 each sample is a full local training (about 17 s on
one CPU core), while fitting a classifier over the samples takes seconds. With a cache, a probe over
other features or another classifier reuses the samples, and adding a seed simulates only that seed.
A file is named by the hash of everything that shapes its samples (model, LoRA layout, data, local
training, the probe's simulation keys, the attack set, the level and the seed), so a changed setting
misses the cache instead of silently reusing stale samples; keys that only shape the classifier
(`probe.classifier`, features, seeds lists) are not part of it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from consortium.attacks import AttackSpec
from consortium.config import RunConfig, to_toml_dict
from consortium.probe.artifact import LEVEL_EVIDENCE, ProbeError
from consortium.probe.dataset import DEFAULT_ATTACKS, Clients, Sample, collect, load_clients
from consortium.probe.features import FeatureSpec
from consortium.probe.model import Probe
from consortium.probe.trainer import train_and_evaluate
from consortium.rundir import atomic_write
from consortium.store import tensors_metadata, tensors_to_bytes

# 2: clients load the base in `model.dtype` (1 trained a bf16-configured model on an fp32 base)
FORMAT = "consortium-probe-samples/2"
_PROBE_KEYS = ("train_rounds", "shadow_lr", "shadow_steps", "step_every")


def sample_key(cfg: RunConfig, seed: int, level: str, attacks: Sequence[AttackSpec] = DEFAULT_ATTACKS) -> str:
    """sha256 of what the samples of one seed are a function of."""
    data = to_toml_dict(cfg)
    shaping = {
        "format": FORMAT,
        "model_seed": cfg.seed,  # a random-init model (tiny) is built from the run seed
        "server_lr": cfg.server_lr,
        **{k: data[k] for k in ("model", "lora", "train")},
        "data": {k: v for k, v in data["data"].items() if k != "n_test"},
        "probe": {k: getattr(cfg.probe, k) for k in _PROBE_KEYS},
        "attacks": [repr(a) for a in attacks],
        "level": level,
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()


def save_samples(path: Path, samples: Sequence[Sample], key: str) -> None:
    """One safetensors file: vec.<i> (and update.<i> at shadow level) plus the labels as metadata."""
    tensors: dict[str, torch.Tensor] = {}
    rows = []
    for i, s in enumerate(samples):
        tensors[f"vec.{i}"] = s.vec.detach().clone()  # own storage: snapshots may share one
        if s.update is not None:
            tensors[f"update.{i}"] = s.update.detach().clone()
        rows.append([s.label, s.attack, s.domain, s.seed, s.round])
    meta = {"format": FORMAT, "key": key, "rows": json.dumps(rows)}
    atomic_write(path, tensors_to_bytes(tensors, meta))


def load_samples(path: Path, key: str) -> list[Sample]:
    """The samples of a cache file; refuses one that is unreadable or made for other settings."""
    try:
        raw = path.read_bytes()
        tensors = st_load(raw)
        meta = tensors_metadata(raw)
        rows = json.loads(meta["rows"])
    except (OSError, SafetensorError, ValueError, KeyError) as e:
        raise ProbeError(f"{path}: unreadable probe sample cache ({e}); delete it to simulate again") from e
    if meta.get("format") != FORMAT or meta.get("key") != key:
        raise ProbeError(f"{path}: not the sample cache of these settings; delete it to simulate again")
    return [
        Sample(tensors[f"vec.{i}"], label, attack, domain, seed, rnd, tensors.get(f"update.{i}"))
        for i, (label, attack, domain, seed, rnd) in enumerate(rows)
    ]


def collect_cached(
    clients: Clients,
    seeds: Sequence[int],
    level: str = "client",
    cache: Path | None = None,
    attacks: Sequence[AttackSpec] = DEFAULT_ATTACKS,
) -> list[Sample]:
    """`collect`, seed by seed, reading each seed's samples from `cache` when there and writing them
    when not (no cache: plain `collect`). Same samples, bit for bit, either way."""
    if cache is None:
        return collect(clients, seeds, level, attacks)
    out: list[Sample] = []
    for seed in seeds:
        key = sample_key(clients.cfg, seed, level, attacks)
        path = Path(cache) / f"{key}.safetensors"
        if path.is_file():
            out += load_samples(path, key)
            continue
        samples = collect(clients, [seed], level, attacks)
        save_samples(path, samples, key)
        out += samples
    return out


def probe_from_config(
    cfg: RunConfig, cache: Path | None = None, transfer: bool = True
) -> tuple[Probe, Clients, list[Sample]]:
    """The probe `cfg.probe` describes (level, seeds, features, classifier), fitted on simulated (or
    cached) samples of exactly this model, LoRA layout and local training, with its evaluation report
    (`transfer`: with the leave-one-out refits) and provenance in `probe.info`; also the clients and
    the held-out samples (for a ROC curve)."""
    pc = cfg.probe
    clients = load_clients(cfg)
    fit = collect_cached(clients, pc.train_seeds, pc.level, cache)
    heldout = collect_cached(clients, pc.heldout_seeds, pc.level, cache)
    spec = FeatureSpec(pc.modules, True, pc.norm_stats, pc.sketch_dim, cfg.seed)
    probe, report = train_and_evaluate(
        fit, heldout, clients.layout, spec, pc.classifier, cfg.seed, exclude=pc.fit_exclude, transfer=transfer
    )
    probe.info = {
        "model": cfg.model.name,
        "level": pc.level,
        "domains": list(cfg.data.domains),
        "attacks": sorted({s.attack for s in fit} - {"benign", *pc.fit_exclude}),
        "tested_not_fitted": sorted(pc.fit_exclude),
        "train_seeds": list(pc.train_seeds),
        "heldout_seeds": list(pc.heldout_seeds),
        "evidence": {k: getattr(pc, k) for k in LEVEL_EVIDENCE[pc.level]},  # what a run must match
        "samples": {"fit": len(fit), "heldout": len(heldout)},
        "report": report,
    }
    return probe, clients, heldout
