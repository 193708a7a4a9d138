"""`consortium probe train`: build the labelled set, train and measure the probe, write the artifact."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from consortium.cli_support import fail, quiet_libraries

probe_app = typer.Typer(no_args_is_help=True, help="Probe defence: train a probe over LoRA updates.")

# the demo preset's domains plus the restricted one that harmful fine-tuning targets
WITH_RESTRICTED = 'data.domains=["arithmetic", "units", "dates", "strings", "policy", "restricted"]'
DEFAULT_SETS = [
    "model.name=tiny-warm",
    WITH_RESTRICTED,
    "data.n_train=40",
    "train.local_steps=4",
    "train.lr=1e-2",
]


def _table(report: dict[str, Any], console: Console) -> None:
    t = Table(title="probe: held-out detection (threshold 0.5)")
    for c in ("evaluation", "tested on", "n mal/ben", "TPR", "FPR", "ROC AUC"):
        t.add_column(c)

    def row(what: str, on: str, m: dict[str, Any] | None) -> None:
        if m is None:
            t.add_row(what, on, "-", "-", "-", "-")
            return

        def f(v: float | None) -> str:
            return "-" if v is None else f"{v:.3f}"

        t.add_row(what, on, f"{m['n_malicious']}/{m['n_benign']}", f(m["tpr"]), f(m["fpr"]), f(m["auc"]))

    row("in distribution", "25% of fitting seeds", report.get("in_distribution"))
    row("transfer", "held-out seeds", report.get("heldout_seeds"))
    for a, m in report.get("per_attack", {}).items():
        row("final probe, held-out seeds", a, m)
    for a, m in report.get("heldout_attacks", {}).items():
        row("transfer: unseen attack", a, m)
    for d, m in report.get("heldout_domains", {}).items():
        row("transfer: unseen domain", d, m)
    console.print(t)


def probe_config(config: Path | None, preset: str, sets: list[str], smollm2: bool = False) -> Any:
    """The run config a probe is trained for. The quick tiny-warm settings belong to the smoke preset
    only: any other preset keeps its own model and training (they once overrode every preset, so
    `--preset bench` silently simulated tiny-warm); every preset gets the restricted domain, whose
    benign clients the harmful attack is told apart from."""
    # import time: `consortium --help` imports this module; pydantic loads on use
    from consortium.config import load_config

    preset = "demo" if smollm2 else preset
    base = DEFAULT_SETS if preset == "smoke" else [WITH_RESTRICTED]
    return load_config(config, preset, [*base, *sets])


@probe_app.command("train")
def train(
    config: Annotated[Path | None, typer.Argument(help="TOML run config (overrides the preset)")] = None,
    out: Annotated[
        Path, typer.Option(help="directory for <sha256>.safetensors and probe_report.json")
    ] = Path("probes"),
    preset: Annotated[
        str, typer.Option(help="built-in preset the config starts from (smoke: tiny-warm, quick settings)")
    ] = "smoke",
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="dotted override, e.g. --set seed=1")
    ] = None,
    smollm2: Annotated[bool, typer.Option(help="real SmolLM2 with the demo preset (slow on CPU)")] = False,
    cache: Annotated[
        Path | None,
        typer.Option(help="keep the simulated samples here, one file per seed, and reuse them next time"),
    ] = None,
    transfer: Annotated[
        bool,
        typer.Option(
            help="also refit leaving each attack and domain out (12 refits; on SmolLM2 each costs a fit)"
        ),
    ] = True,
) -> None:
    """Simulate benign and malicious clients (every attack, several domains and seeds), train the probe,
    report held-out TPR / FPR / ROC AUC, and write it as a content-addressed artifact."""
    # import time: `consortium --help` imports this module; pydantic, torch and the model load later
    from consortium.config import ConfigError
    from consortium.probe.artifact import save
    from consortium.probe.samples import probe_from_config
    from consortium.rundir import atomic_write

    try:
        cfg = probe_config(config, preset, set_ or [], smollm2)
    except ConfigError as e:
        fail(str(e))
    console = Console()
    quiet_libraries()
    t0 = time.perf_counter()
    with console.status(f"loading {cfg.model.name!r} and simulating clients"):
        probe, clients, heldout = probe_from_config(cfg, cache, transfer)
    report = probe.info["report"]
    digest, path = save(probe, out)
    atomic_write(out / "probe_report.json", json.dumps({"artifact": digest, **probe.info}, indent=2))
    import torch  # import time: as above

    from consortium.probe.plot import roc_png  # import time: matplotlib
    from consortium.probe.trainer import features as feats  # import time: scikit-learn

    x, y = feats(heldout, clients.layout, probe.features)
    curve = {"held-out seeds": (y.tolist(), probe.score_features(torch.from_numpy(x)).tolist())}
    level = cfg.probe.level
    roc_png(curve, out / f"roc_{digest[:12]}.png", f"probe {digest[:12]} ({level} level)")
    _table(report, console)
    console.print(
        f"{probe.info['samples']['fit']} + {len(heldout)} samples in {time.perf_counter() - t0:.0f}s; "
        f"probe: [bold]{path}"
    )
    console.print(
        f'use it: \\[probe] artifact = "{digest}"  dir = "{out}"  level = "{level}"', highlight=False
    )
