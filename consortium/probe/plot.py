"""ROC curve of a probe on its held-out samples (PNG), next to the artifact."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def roc_png(curves: Mapping[str, tuple[Sequence[int], Sequence[float]]], path: Path, title: str) -> None:
    """One ROC curve per named (labels, scores) set, with its AUC in the legend."""
    # import time: matplotlib, for this one plot
    import matplotlib

    matplotlib.use("Agg")
    # import time: pyplot and scikit-learn, imported once the backend is chosen
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, (y, s) in curves.items():
        if len(set(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(list(y), list(s))
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(list(y), list(s)):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(
        xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01)
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
