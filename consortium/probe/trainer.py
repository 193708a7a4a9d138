"""Train a probe on a labelled ΔLoRA set and measure it: in distribution, and on held-out seeds, attacks
and domains (transfer, reported separately, each by a probe that never saw what it is tested on)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from consortium.probe.dataset import Sample
from consortium.probe.features import FeatureSpec, Layout, extract
from consortium.probe.model import Probe, build

THRESHOLD = 0.5  # a score at or above this is a 'malicious' verdict in the reported TPR / FPR


def metrics(y: Sequence[int], scores: Sequence[float], threshold: float = THRESHOLD) -> dict[str, Any]:
    """TPR and FPR at `threshold`, ROC AUC (None when only one class is present), counts."""
    from sklearn.metrics import roc_auc_score  # import time: scikit-learn, only once a probe is measured

    y_arr, s_arr = np.asarray(y), np.asarray(scores)
    pos, neg = y_arr == 1, y_arr == 0
    flagged = s_arr >= threshold
    return {
        "n_malicious": int(pos.sum()),
        "n_benign": int(neg.sum()),
        "tpr": float(flagged[pos].mean()) if pos.any() else None,
        "fpr": float(flagged[neg].mean()) if neg.any() else None,
        "auc": float(roc_auc_score(y_arr, s_arr)) if pos.any() and neg.any() else None,
    }


def features(samples: Sequence[Sample], lay: Layout, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """The feature matrix, filled row by row: a list of rows stacked at the end held the features
    twice (1,440 step snapshots of the bench preset, 622k float64 features each: 7 GB, twice, beside
    the samples: killed for memory on a 24 GB machine)."""
    y = np.asarray([s.label for s in samples])
    if not samples:
        return np.zeros((0, 0)), y
    first = extract(samples[0].vec, lay, spec)
    x = np.empty((len(samples), first.numel()), dtype=np.float64)
    x[0] = first.numpy()
    for i, s in enumerate(samples[1:], 1):
        x[i] = extract(s.vec, lay, spec).numpy()
    return x, y


def _fit_eval(
    train: list[int], test: list[int], x: np.ndarray, y: np.ndarray, fx: Any
) -> dict[str, Any] | None:
    if len(set(y[train].tolist())) < 2 or not test:
        return None
    probe = fx(x[train], y[train])
    return metrics(y[test].tolist(), probe.score_features(torch.from_numpy(x[test])).tolist())


def train_and_evaluate(
    fit_samples: Sequence[Sample],
    heldout: Sequence[Sample],
    lay: Layout,
    spec: FeatureSpec,
    kind: str = "logreg",
    seed: int = 0,
    exclude: Sequence[str] = (),
    transfer: bool = True,
) -> tuple[Probe, dict[str, Any]]:
    """The probe fitted on all of `fit_samples`, and a report: held-out seeds, overall and per attack
    (`per_attack`, the final probe); with `transfer`, also in distribution (a seeded 25% split of the
    fitting seeds), leave-one-attack-out and leave-one-domain-out (both tested on the held-out seeds).
    Attack kinds in `exclude` are never fitted on; the final probe is tested on them (held-out seeds)
    under 'heldout_attacks' like the left-out ones. `transfer=False` skips the refits: on the bench
    preset's SmolLM2 updates (622k features, an MLP) the whole report took 21 min, the fit alone 3."""
    fit_samples = [s for s in fit_samples if s.attack not in exclude]
    x_fit, y_fit = features(fit_samples, lay, spec)
    x_out, y_out = features(heldout, lay, spec)

    def fx(x: np.ndarray, y: np.ndarray) -> Probe:
        return build(x, y, spec, lay, kind, seed=seed)

    report: dict[str, Any] = {"n_fit": len(fit_samples), "transfer": transfer}
    if transfer:
        order = list(range(len(fit_samples)))
        random.Random(seed).shuffle(order)
        cut = len(order) // 4
        report["in_distribution"] = _fit_eval(sorted(order[cut:]), sorted(order[:cut]), x_fit, y_fit, fx)
    probe = fx(x_fit, y_fit)
    if not len(heldout):
        return probe, report
    scores = probe.score_features(torch.from_numpy(x_out)).tolist()

    def final_on(rows: list[int]) -> dict[str, Any]:
        return metrics([int(y_out[i]) for i in rows], [scores[i] for i in rows])

    fitted = [i for i, s in enumerate(heldout) if s.attack not in exclude]
    report["heldout_seeds"] = final_on(fitted)
    report["per_attack"] = {
        a: final_on([i for i, s in enumerate(heldout) if s.attack in ("benign", a)])
        for a in sorted({s.attack for s in heldout} - {"benign"})
    }
    if not transfer:
        return probe, report
    x_all, y_all = np.concatenate([x_fit, x_out]), np.concatenate([y_fit, y_out])
    n = len(fit_samples)
    attacks = sorted({s.attack for s in fit_samples} - {"benign"})
    report["heldout_attacks"] = {
        a: _fit_eval(
            [i for i, s in enumerate(fit_samples) if s.attack != a],
            [n + i for i in fitted if heldout[i].attack in ("benign", a)],
            x_all,
            y_all,
            fx,
        )
        for a in attacks
    }
    for a in sorted({s.attack for s in heldout} & set(exclude)):  # never fitted on: the final probe
        report["heldout_attacks"][a] = report["per_attack"][a]
    report["heldout_domains"] = {
        d: _fit_eval(
            [i for i, s in enumerate(fit_samples) if s.domain != d],
            [n + i for i in fitted if heldout[i].domain == d],
            x_all,
            y_all,
            fx,
        )
        for d in sorted({s.domain for s in fit_samples})
    }
    return probe, report
