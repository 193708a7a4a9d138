"""The probe itself: standardise the features, then logistic regression (or a small MLP) -> P(malicious).

Fitted with scikit-learn, but stored and applied as plain tensors (no pickles): scoring is a few float64
matrix products in torch, deterministic and identical on every machine that recomputes a round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from consortium.probe.features import FeatureSpec, Layout, extract_many

Kind = Literal["logreg", "mlp"]
KINDS: tuple[str, ...] = ("logreg", "mlp")


@dataclass
class Probe:
    """A trained probe: feature spec, the layout it applies to, and the classifier's tensors."""

    kind: str
    features: FeatureSpec
    layout: Layout
    tensors: dict[str, torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)  # what it was trained on and how it scored

    def score_features(self, x: torch.Tensor) -> torch.Tensor:
        """P(malicious) for each row of a feature matrix [n, f] (float64)."""
        t = self.tensors
        h = (x.to(torch.float64) - t["mean"]) / t["scale"]
        if self.kind == "logreg":
            return torch.sigmoid(h @ t["coef"] + t["intercept"])
        layers = sum(1 for k in t if k.startswith("w"))
        for i in range(layers):
            h = h @ t[f"w{i}"] + t[f"b{i}"]
            if i < layers - 1:
                h = torch.relu(h)
        return torch.sigmoid(h.reshape(-1))

    def score(self, updates: torch.Tensor) -> torch.Tensor:
        """P(malicious) for each update of a stack [n, d] in the probe's layout."""
        return self.score_features(extract_many(updates, self.layout, self.features))


def fit(
    x: np.ndarray, y: np.ndarray, kind: str = "logreg", *, c: float = 1.0, hidden: int = 32, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Fit the classifier on features x [n, f] and labels y (1 = malicious); returns its tensors."""
    # import time: scikit-learn takes seconds, and only fitting a probe needs it (not screening)
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    if kind not in KINDS:
        raise ValueError(f"probe kind must be one of {KINDS}, got {kind!r}")
    if len(set(y.tolist())) != 2:
        raise ValueError("a probe needs both benign (0) and malicious (1) training samples")
    scaler = StandardScaler().fit(x)
    z = scaler.transform(x)
    out = {
        "mean": torch.from_numpy(scaler.mean_.astype(np.float64)),
        "scale": torch.from_numpy(scaler.scale_.astype(np.float64)),
    }
    if kind == "logreg":
        clf = LogisticRegression(C=c, class_weight="balanced", max_iter=5000, random_state=seed).fit(z, y)
        out["coef"] = torch.from_numpy(clf.coef_[0].astype(np.float64))
        out["intercept"] = torch.tensor([float(clf.intercept_[0])], dtype=torch.float64)
    else:
        mlp = MLPClassifier((hidden,), alpha=1e-2, max_iter=2000, random_state=seed).fit(z, y)
        for i, (w, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_, strict=True)):
            out[f"w{i}"] = torch.from_numpy(w.astype(np.float64))
            out[f"b{i}"] = torch.from_numpy(b.astype(np.float64))
    return {k: v.contiguous() for k, v in out.items()}


def build(
    x: np.ndarray, y: np.ndarray, features: FeatureSpec, lay: Layout, kind: str = "logreg", **kw: Any
) -> Probe:
    """Fit and wrap into a Probe."""
    return Probe(kind, features, [(n, tuple(s)) for n, s in lay], fit(x, y, kind, **kw))
