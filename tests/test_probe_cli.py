"""`consortium probe train` end to end on the tiny model: a content-addressed artifact a run can name,
its report, and a clear refusal of bad settings that leaves nothing behind."""

import json
from pathlib import Path

from typer.testing import CliRunner

from consortium.cli import app
from consortium.probe.artifact import load_file
from consortium.store import sha256_hex

runner = CliRunner()
# one fitting seed, one held-out seed, one round of the tiny random-init model: seconds
FAST = [
    "--set", "model.name=tiny",
    "--set", "data.n_train=16",
    "--set", "train.local_steps=2",
    "--set", "probe.train_seeds=[0]",
    "--set", "probe.heldout_seeds=[1]",
    "--set", "probe.train_rounds=1",
    "--set", "probe.classifier=logreg",
]  # fmt: skip


def test_probe_train_writes_an_artifact_named_by_its_hash(tmp_path: Path) -> None:
    out = tmp_path / "probes"
    res = runner.invoke(app, ["probe", "train", "--out", str(out), *FAST])
    assert res.exit_code == 0, res.output
    (artifact,) = out.glob("*.safetensors")
    digest = artifact.name.removesuffix(".safetensors")
    assert sha256_hex(artifact.read_bytes()) == digest
    report = json.loads((out / "probe_report.json").read_text())
    assert report["artifact"] == digest and report["level"] == "client" and report["model"] == "tiny"
    assert "restricted" in report["domains"] and "harmful" in report["attacks"]
    # excluded kinds are simulated and tested on, never fitted on
    assert set(report["tested_not_fitted"]) == {"free_rider", "noise"}
    assert not set(report["attacks"]) & {"free_rider", "noise"}
    assert report["samples"]["fit"] > 0 and report["samples"]["heldout"] > 0
    assert "heldout_seeds" in report["report"]
    assert load_file(artifact, digest).info["report"] == report["report"]
    assert f'artifact = "{digest}"' in res.output.replace("\n", "")


def test_probe_train_refuses_a_bad_setting_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "probes"
    res = runner.invoke(app, ["probe", "train", "--out", str(out), *FAST, "--set", "probe.classifier=svm"])
    assert res.exit_code == 2
    assert "classifier" in res.output
    assert not out.exists() or not any(out.iterdir())


def test_probe_train_keeps_a_named_presets_model_and_training() -> None:
    """`--preset bench` simulates the bench preset's SmolLM2 clients, not the smoke preset's quick
    tiny-warm settings (which once overrode every preset); every preset gets the restricted domain."""
    from consortium.cli_probe import probe_config

    bench = probe_config(None, "bench", ["probe.train_rounds=5"])
    assert (bench.model.name, bench.lora.layers, bench.train.local_steps) == ("smollm2", "top:15", 10)
    assert bench.probe.train_rounds == 5 and "restricted" in bench.data.domains
    smoke = probe_config(None, "smoke", [])
    assert (smoke.model.name, smoke.train.local_steps) == ("tiny-warm", 4)
    assert probe_config(None, "smoke", [], smollm2=True).model.name == "smollm2"
