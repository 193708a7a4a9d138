"""The probe's sample cache: the same samples bit for bit, no simulation on a hit, a key that follows
what shapes the samples and nothing else, and a clear refusal of a damaged or foreign file."""

from pathlib import Path

import pytest
import torch

import consortium.probe.samples as samples_mod
from consortium.attacks import BackdoorAttack, NoiseAttack
from consortium.cli_probe import DEFAULT_SETS
from consortium.config import load_config
from consortium.probe.artifact import ProbeError
from consortium.probe.dataset import load_clients
from consortium.probe.samples import collect_cached, sample_key

ATTACKS = (BackdoorAttack(), NoiseAttack(std=1e-3))
SETS = [*DEFAULT_SETS, "model.name=tiny", "data.n_train=8", "train.local_steps=1", "probe.train_rounds=1"]


@pytest.fixture(scope="module")
def clients():
    return load_clients(load_config(None, "smoke", SETS))


def _same(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x.vec, y.vec)
        and (x.label, x.attack, x.domain, x.seed, x.round) == (y.label, y.attack, y.domain, y.seed, y.round)
        and ((x.update is None and y.update is None) or torch.equal(x.update, y.update))
        for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("level", ["client", "shadow"])
def test_a_cache_hit_gives_the_same_samples_without_simulating(
    clients, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, level: str
) -> None:
    plain = collect_cached(clients, [0, 1], level, None, ATTACKS)
    first = collect_cached(clients, [0, 1], level, tmp_path, ATTACKS)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2  # one file per seed
    assert _same(plain, first)
    assert (level == "shadow") == all(s.update is not None for s in first if s.attack == "benign")

    def no_simulation(*a, **k):
        raise AssertionError("simulated despite a cache hit")

    monkeypatch.setattr(samples_mod, "collect", no_simulation)
    assert _same(collect_cached(clients, [0, 1], level, tmp_path, ATTACKS), plain)
    with pytest.raises(AssertionError, match="simulated"):  # a new seed is a miss: it simulates
        collect_cached(clients, [2], level, tmp_path, ATTACKS)


def test_the_key_follows_what_shapes_the_samples_only() -> None:
    cfg = load_config(None, "smoke", SETS)
    key = sample_key(cfg, 0, "client")
    for change in ("train.lr=0.5", "lora.r=2", "data.n_train=9", "probe.train_rounds=2", "seed=1"):
        assert sample_key(load_config(None, "smoke", [*SETS, change]), 0, "client") != key, change
    for same in ("probe.classifier=logreg", "probe.heldout_seeds=[7]", "data.n_test=3", "rounds=9"):
        assert sample_key(load_config(None, "smoke", [*SETS, same]), 0, "client") == key, same
    assert sample_key(cfg, 1, "client") != key != sample_key(cfg, 0, "shadow")
    assert sample_key(cfg, 0, "client", ATTACKS) != key


def test_a_damaged_or_foreign_cache_file_is_refused_by_name(clients, tmp_path: Path) -> None:
    collect_cached(clients, [0, 1], "client", tmp_path, ATTACKS)
    k0, k1 = (sample_key(clients.cfg, s, "client", ATTACKS) for s in (0, 1))
    f0, f1 = tmp_path / f"{k0}.safetensors", tmp_path / f"{k1}.safetensors"
    f0.write_bytes(f1.read_bytes())  # seed 1's samples under seed 0's name
    with pytest.raises(ProbeError, match=f"{k0}.*not the sample cache of these settings"):
        collect_cached(clients, [0], "client", tmp_path, ATTACKS)
    f0.write_bytes(f1.read_bytes()[:100])
    with pytest.raises(ProbeError, match=f"{k0}.*unreadable"):
        collect_cached(clients, [0], "client", tmp_path, ATTACKS)


def test_probe_from_config_follows_the_probe_section_and_reuses_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from consortium.probe.samples import probe_from_config

    sets = [*SETS, "probe.train_seeds=[0]", "probe.heldout_seeds=[1]", "probe.classifier=logreg"]
    first = probe_from_config(load_config(None, "smoke", sets), tmp_path)[0]
    assert first.kind == "logreg" and first.features.sketch_dim == 0

    def no_simulation(*a, **k):
        raise AssertionError("simulated despite a cache hit")

    monkeypatch.setattr(samples_mod, "collect", no_simulation)
    sketched = probe_from_config(load_config(None, "smoke", [*sets, "probe.sketch_dim=64"]), tmp_path)[0]
    assert sketched.features.sketch_dim == 64 and sketched.tensors["coef"].shape[0] == 64 + len(
        [n for n, _ in sketched.layout]
    )
    assert sketched.info["samples"] == first.info["samples"]


def test_simulated_clients_train_the_base_in_the_configured_dtype() -> None:
    """The probe's clients are the run's participants: a bf16 base stays bf16 (it was loaded in fp32
    whatever `model.dtype` said), the adapter and the updates stay fp32."""
    clients = load_clients(load_config(None, "smoke", [*SETS, "model.dtype=bfloat16"]))
    causal_lm = clients.trainer.model.get_base_model()
    assert causal_lm.get_input_embeddings().weight.dtype == torch.bfloat16
    assert {p.dtype for p in clients.trainer.model.parameters() if p.requires_grad} == {torch.float32}
    assert clients.initial.dtype == torch.float32
