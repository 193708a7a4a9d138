"""Run report: PNG plots and a Markdown summary built from the report dict (never from live objects)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from consortium.rundir import atomic_write


def _save(fig: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)


def plot_accuracy_per_round(report: dict[str, Any], path: Path) -> None:
    rounds = report["rounds_detail"]
    domains = [d for d in report["accuracy"]["base"] if d != "mean"]
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [0] + [r["round"] + 1 for r in rounds]
    for d in [*domains, "mean"]:
        ys = [report["accuracy"]["base"][d]] + [r["accuracy"][d] for r in rounds]
        ax.plot(xs, ys, marker="o", lw=2.5 if d == "mean" else 1.2, ls="-" if d == "mean" else "--", label=d)
    ax.set_xlabel("round (0 = base model)")
    ax.set_ylabel("exact-match accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Federated global model, accuracy per domain")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_cross_domain(report: dict[str, Any], path: Path) -> None:
    matrix = report["cross_domain"]
    rows = list(matrix)
    cols = list(next(iter(matrix.values())))
    values = [[matrix[r][c] for c in cols] for r in rows]
    fig, ax = plt.subplots(figsize=(1.3 * len(cols) + 2, 0.55 * len(rows) + 1.5))
    im = ax.imshow(values, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w" if v < 0.6 else "k", fontsize=8)
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("trained on")
    ax.set_title("Cross-domain accuracy")
    fig.colorbar(im, ax=ax, fraction=0.04)
    _save(fig, path)


def plot_losses(report: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for pid, losses in report["losses"]["federated"].items():
        ax.plot(range(1, len(losses) + 1), losses, label=f"{pid} (federated)")
    for pid, losses in report["losses"].get("isolated", {}).items():
        ax.plot(range(1, len(losses) + 1), losses, ls=":", alpha=0.7, label=f"{pid} (isolated)")
    ax.set_xlabel("local step (all rounds)")
    ax.set_ylabel("training loss (response tokens)")
    ax.set_title("Local training loss")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    _save(fig, path)


def _acc_table(acc: dict[str, dict[str, float]]) -> str:
    if not acc:
        return "_No evaluation finished._"
    domains = list(next(iter(acc.values())))
    lines = ["| model | " + " | ".join(domains) + " |", "|---" * (len(domains) + 1) + "|"]
    for name, row in acc.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[d]:.3f}" for d in domains) + " |")
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> str:
    t = report["timings"]
    out = [
        f"# Run report: {report['name']}",
        "",
        f"Status: **{report['status']}**. Model `{report['model']}`, "
        f"LoRA variant `{report['lora_variant']}`, "
        f"{report['participants']} participants, {report['rounds_completed']}/{report['rounds']} rounds, "
        f"aggregator `{report['aggregator']}`.",
        "",
        "## Accuracy (exact match)",
        "",
        _acc_table(report["accuracy"]),
        "",
        "`isolated` is the mean over participants that each trained alone for the same number of steps.",
        "",
        "![accuracy per round](plots/accuracy_per_round.png)",
        "",
    ]
    if report.get("cross_domain"):
        out += ["## Cross-domain matrix", "", "![cross-domain](plots/cross_domain.png)", ""]
    out += [
        "## Training",
        "",
        "![loss curves](plots/loss_curves.png)",
        "",
        f"Bytes per participant per round: **{report['bytes']['upload_per_participant_per_round']:,}** up, "
        f"**{report['bytes']['download_per_participant_per_round']:,}** down "
        f"({report['bytes']['trainable_params']:,} communicated parameters).",
        "",
        "## Timings (s)",
        "",
        "| phase | seconds |",
        "|---|---|",
        *[f"| {k} | {v:.1f} |" for k, v in t.items()],
        "",
    ]
    return "\n".join(out)


def write_report(report: dict[str, Any], run_dir: Path) -> None:
    """Plots first, then report.md; plots that need missing data are skipped, not faked."""
    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
    if report["rounds_detail"]:
        plot_accuracy_per_round(report, plots / "accuracy_per_round.png")
        plot_losses(report, plots / "loss_curves.png")
    if report.get("cross_domain"):
        plot_cross_domain(report, plots / "cross_domain.png")
    atomic_write(run_dir / "report.md", render_markdown(report))
