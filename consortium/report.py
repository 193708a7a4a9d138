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


def plot_flags(report: dict[str, Any], path: Path) -> None:
    """Which proposer the defence flagged in which round; attackers' names are marked with their attack."""
    rounds = report["rounds_detail"]
    names = sorted(report["participant_domains"])
    attackers = report.get("attackers", {})
    grid = [[1.0 if n in r.get("flagged", []) else 0.0 for r in rounds] for n in names]
    fig, ax = plt.subplots(figsize=(0.5 * len(rounds) + 3, 0.3 * len(names) + 1.5))
    ax.imshow(grid, vmin=0, vmax=1, cmap="Reds", aspect="auto")
    labels = [f"{n} [{attackers[n]}]" if n in attackers else n for n in names]
    ax.set_yticks(range(len(names)), labels, fontsize=7)
    for tick, n in zip(ax.get_yticklabels(), names, strict=True):
        tick.set_color("crimson" if n in attackers else "black")
    ax.set_xticks(range(len(rounds)), [str(r["round"] + 1) for r in rounds])
    ax.set_xlabel("round")
    ax.set_title(f"Flagged by `{report['aggregator']}` (red cell); attackers in red")
    _save(fig, path)


def plot_backdoor(report: dict[str, Any], path: Path) -> None:
    """Attack success and false-trigger rate of every planted backdoor over the rounds."""
    rounds = report["rounds_detail"]
    fig, ax = plt.subplots(figsize=(7, 4))
    base = report["backdoor"].get("base", [])
    for k, bd in enumerate(base):
        xs = [0] + [r["round"] + 1 for r in rounds]
        asr = [bd["asr"]] + [r["backdoor"][k]["asr"] for r in rounds]
        ft = [bd["false_trigger"]] + [r["backdoor"][k]["false_trigger"] for r in rounds]
        ax.plot(xs, asr, marker="o", label=f"ASR '{bd['trigger']}'")
        ax.plot(xs, ft, marker="x", ls="--", label=f"false trigger '{bd['trigger']}'")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("round (0 = base model)")
    ax.set_ylabel("rate")
    ax.set_title(f"Backdoor under `{report['aggregator']}`")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)


STRATEGY_COLOURS = {
    "honest": "tab:green",
    "lazy_voter": "tab:orange",
    "colluding_voter": "tab:purple",
    "no_show": "tab:gray",
    "free_rider": "tab:brown",
}


def stake_series(report: dict[str, Any]) -> dict[str, list[float]]:
    """Stake + withdrawable balance of every participant after each round (registration first)."""
    chain = report.get("chain", {})
    stake0 = chain.get("stake", 0.0)
    series: dict[str, list[float]] = {n: [stake0] for n in chain.get("strategies", {})}
    for r in report["rounds_detail"]:
        for n in series:
            series[n].append(r.get("stakes", {}).get(n, 0.0) + r.get("balances", {}).get(n, 0.0))
    return series


def plot_stakes(report: dict[str, Any], path: Path) -> None:
    """Every participant's stake plus earned balance over the rounds, coloured by strategy."""
    strategies = report["chain"]["strategies"]
    fig, ax = plt.subplots(figsize=(7, 4))
    seen: set[str] = set()
    for name, ys in stake_series(report).items():
        kind = strategies[name]
        colour = STRATEGY_COLOURS.get(kind, "tab:red")  # every attack in red
        label = None if kind in seen else kind
        seen.add(kind)
        ax.plot(range(len(ys)), ys, color=colour, alpha=0.8, label=label)
    ax.set_xlabel("round (0 = registration)")
    ax.set_ylabel("stake + balance (ETH)")
    ax.set_title("Stake per participant, by strategy")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)


def _chain_section(report: dict[str, Any]) -> list[str]:
    chain = report["chain"]
    out = [
        "## Chain",
        "",
        f"Contract `{chain['contract']}` on the `{chain['backend']}` backend; head block "
        f"{chain['head']['block']} `{chain['head']['hash'][:18]}…`. Strategies: "
        + ", ".join(f"`{n}` {k}" for n, k in chain["strategies"].items() if k != "honest")
        + (" (everyone else honest)." if any(k == "honest" for k in chain["strategies"].values()) else "."),
        "",
        "| round | proposers | voters | candidates | votes (choice; flags) | outcome | slashed | gas |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rounds_detail"]:
        if "outcome" not in r:
            continue
        cands = (
            "; ".join(
                f"#{c['number']} by {c['poster']}"
                + (f" flags {','.join(c['flagged'])}" if c["flagged"] else "")
                for c in r.get("candidates", [])
            )
            or "-"
        )
        votes = (
            "; ".join(
                f"{v}: {b['choice']}" + (f" ({','.join(b['flags'])})" if b["flags"] else "")
                for v, b in r.get("votes", {}).items()
            )
            or "-"
        )
        slashed = ", ".join(f"{s['who']} {s['eth']:.3g} ({s['reason']})" for s in r.get("slashes", [])) or "-"
        out.append(
            f"| {r['round'] + 1} | {', '.join(r['proposers']) or '-'} | {', '.join(r['voters']) or '-'} "
            f"| {cands} | {votes} | {r['outcome']} | {slashed} | {sum(r.get('gas', {}).values()):,} |"
        )
    out += ["", "Choice 0 rejects, k accepts candidate #k.", "", "![stakes](plots/stakes.png)", ""]
    return out


def _attack_section(report: dict[str, Any]) -> list[str]:
    rounds = report["rounds_detail"]
    attackers = report.get("attackers", {})
    out = ["## Attacks and defence", ""]
    if attackers:
        out.append("Attackers: " + ", ".join(f"`{n}` ({k})" for n, k in attackers.items()) + ".")
    else:
        out.append("No attacker in this run.")
    out += ["", "| round | flagged | defence time (s) | ASR | false trigger |", "|---|---|---|---|---|"]
    for r in rounds:
        bd = r.get("backdoor") or []
        asr = ", ".join(f"{b['asr']:.3f}" for b in bd) or "-"
        ft = ", ".join(f"{b['false_trigger']:.3f}" for b in bd) or "-"
        flagged = ", ".join(r.get("flagged", [])) or "-"
        out.append(f"| {r['round'] + 1} | {flagged} | {r.get('defense_seconds', 0.0):.4f} | {asr} | {ft} |")
    out += ["", "![flags](plots/flags.png)", ""]
    if report.get("backdoor", {}).get("base"):
        out += ["![backdoor](plots/backdoor.png)", ""]
    return out


def _eps(x: float | None) -> str:
    return "∞" if x is None else f"{x:.3f}"


def _privacy_section(report: dict[str, Any]) -> list[str]:
    """Client-level DP: the settings, then ε spent so far after every round (docs/privacy.md)."""
    pv = report["privacy"]
    out = [
        "## Differential privacy",
        "",
        f"Mode `{pv['mode']}`, clip C = {pv['clip']}, noise multiplier z = {pv['noise_multiplier']}, "
        f"δ = {pv['delta']}, accountant `{pv['accountant']}`, budget ε = {pv['epsilon_budget'] or 'none'}.",
        "",
        "| round | ε (global models) | ε (store readers) | z effective |",
        "|---|---|---|---|",
    ]
    for r in report["rounds_detail"]:
        p = r.get("privacy") or {}
        store = "none (updates public)" if pv["mode"] == "central" else _eps(p.get("epsilon_store"))
        z = p.get("noise_multiplier_effective")
        out.append(
            f"| {r['round'] + 1} | {_eps(p.get('epsilon'))} | {store} | {z if z is None else f'{z:.3f}'} |"
        )
    if pv.get("stopped"):
        out += ["", f"**Stopped:** {pv['stopped']}"]
    return [*out, ""]


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
    if report["rounds_detail"]:
        out += _attack_section(report)
    if report.get("chain") and report["rounds_detail"]:
        out += _chain_section(report)
    if report.get("privacy"):
        out += _privacy_section(report)
    if report.get("cross_domain"):
        out += ["## Cross-domain matrix", "", "![cross-domain](plots/cross_domain.png)", ""]
    out += [
        "## Training",
        "",
        "![loss curves](plots/loss_curves.png)",
        "",
        f"Bytes per participant per round: **{report['bytes']['upload_per_participant_per_round']:,}** up, "
        f"**{report['bytes']['download_per_participant_per_round']:,}** down "
        f"({report['bytes']['trainable_params']:,} communicated parameters, LoRA variant "
        f"`{report.get('lora_variant', '?')}`; each round's entry in report.json repeats the figures).",
        "",
        "## Timings (s)",
        "",
        "| phase | seconds |",
        "|---|---|",
        *[f"| {k} | {v:.1f} |" for k, v in t.items()],
        "",
    ]
    return "\n".join(out)


def write_report(report: dict[str, Any], run_dir: Path, plots_too: bool = True) -> None:
    """Plots first, then report.md; plots that need missing data are skipped, not faked. Benchmarks
    that run hundreds of cells pass `plots_too=False` (Matplotlib would dominate their time)."""
    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
    if report["rounds_detail"] and plots_too:
        plot_accuracy_per_round(report, plots / "accuracy_per_round.png")
        plot_losses(report, plots / "loss_curves.png")
        plot_flags(report, plots / "flags.png")
        if report.get("backdoor", {}).get("base"):
            plot_backdoor(report, plots / "backdoor.png")
        if report.get("chain"):
            plot_stakes(report, plots / "stakes.png")
    if report.get("cross_domain"):
        plot_cross_domain(report, plots / "cross_domain.png")
    atomic_write(run_dir / "report.md", render_markdown(report))
