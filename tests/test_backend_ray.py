"""The Ray backend against the in-process run: same config and seed, same records, bit for bit.

One local Ray cluster (2 CPUs) is shared by the module; one run of the tiny model in process and the
same on two Ray actors (central protocol, 4 organisations, 2 rounds, an attacker, distributed DP) are
compared: every committed blob, every global model, the losses and the accuracies. Both sides train with
one torch thread (the actors default to the driver's count), so the expected difference is zero.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console

from consortium.config import config_digest, load_config, to_toml_dict
from consortium.sim import Simulation

ray = pytest.importorskip("ray")

OVERRIDES = [
    "protocol=central",
    "participants=4",
    "rounds=2",
    'attacks=[{kind="adaptive_backdoor", fraction=0.25}]',
    "privacy.mode=distributed",
    "privacy.clip=0.05",
    "privacy.noise_multiplier=0.5",
    "privacy.delta=1e-3",
]


@pytest.fixture(scope="module")
def cluster() -> object:
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()


def _run(tmp: Path, overrides: list[str]) -> tuple[dict, Simulation]:
    sim = Simulation(load_config(preset="smoke", overrides=overrides), Console(quiet=True))
    path = sim.run(tmp, plots=False)
    return json.loads((path / "report.json").read_text()), sim


def _records(report: dict) -> list[tuple]:
    """What the protocol recorded, round by round: commitments (who, blob, n) and the global in/out."""
    return [
        (
            r["global_in"],
            r["global_out"],
            [(c["participant"], c["blob"], c["n_examples"]) for c in r["commitments"]],
        )
        for r in report["rounds_detail"]
    ]


@pytest.fixture(scope="module")
def pair(cluster: object, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, Simulation]:
    """The same run in process and on Ray: an adaptive backdoor (its clean and poisoned fits run remotely,
    crafted in the driver), distributed DP (each honest share clipped and noised in the driver) and the
    isolated baselines (submitted to the actors all at once)."""
    tmp = tmp_path_factory.mktemp("ray")
    local, _ = _run(tmp / "inprocess", OVERRIDES)
    remote, sim = _run(tmp / "ray", [*OVERRIDES, "backend=ray"])
    return local, remote, sim


def test_ray_records_match_inprocess_bit_for_bit(pair: tuple[dict, dict, Simulation]) -> None:
    local, remote, _ = pair
    assert remote["status"] == local["status"] == "complete"
    assert len(_records(local)) == 2 and _records(remote) == _records(local)
    assert remote["global_adapter"] == local["global_adapter"]
    assert remote["losses"] == local["losses"]
    honest = [v for k, v in remote["losses"]["federated"].items() if k not in remote["attackers"]]
    assert len(honest) == 3 and all(len(v) == 2 * 3 for v in honest)  # 2 rounds x 3 local steps
    assert sorted(remote["losses"]["isolated"]) == ["org0", "org1", "org2", "org3"]
    assert remote["accuracy"] == local["accuracy"] and remote["cross_domain"] == local["cross_domain"]
    assert remote["privacy"]["epsilon"] == local["privacy"]["epsilon"] > 0
    assert [r["info"]["dp"] for r in remote["rounds_detail"]] == [
        r["info"]["dp"] for r in local["rounds_detail"]
    ]


def test_ray_trained_in_the_actors_and_says_so(pair: tuple[dict, dict, Simulation]) -> None:
    local, remote, sim = pair
    assert local["backend"] == {"kind": "inprocess", "threads": torch.get_num_threads()}
    assert remote["backend"]["kind"] == "ray" and remote["backend"]["threads"] == torch.get_num_threads()
    assert list(remote["attackers"].values()) == ["adaptive_backdoor"]
    pids = {w["pid"] for w in sim.backend.final_info}  # two worker processes, neither of them this one
    assert len(pids) == remote["backend"]["workers"] == 2 and os.getpid() not in pids
    assert all(w["threads"] == torch.get_num_threads() for w in sim.backend.final_info)
    assert not sim.backend.actors  # stopped when the run ended


def test_backend_is_recorded_but_not_in_the_config_digest() -> None:
    inproc = load_config(preset="smoke")
    on_ray = load_config(preset="smoke", overrides=["backend=ray", "ray.workers=3"])
    assert "backend" not in to_toml_dict(inproc) and "ray" not in to_toml_dict(inproc)
    assert to_toml_dict(on_ray)["backend"] == "ray" and to_toml_dict(on_ray)["ray"]["workers"] == 3
    assert config_digest(on_ray) == config_digest(inproc)


def test_unreachable_ray_address_fails_fast_naming_it(tmp_path: Path) -> None:
    """A separate process (this one may hold a Ray already): a closed port, a clear error, exit 2."""
    args = ["run", "--preset", "smoke", "--set", "backend=ray", "--set", "ray.address=127.0.0.1:9"]
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", "from consortium.cli import app; app()", *args, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "ray.address '127.0.0.1:9': cannot reach 127.0.0.1:9" in done.stdout + done.stderr
    assert time.perf_counter() - t0 < 60
    assert not any(tmp_path.iterdir())  # nothing written: the run directory is never created
