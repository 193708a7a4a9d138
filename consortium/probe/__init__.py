"""Probe-based defence over LoRA updates (Safe-FedLLM style): features of ΔLoRA, a light classifier,
content-addressed probe artifacts, and the client / step / shadow / evidence levels of the pipeline.
See docs/probes.md."""

from consortium.probe.artifact import (
    ProbeError,
    check_fitted_for,
    check_layout,
    load,
    load_file,
    publish,
    save,
)
from consortium.probe.defense import Decision, Observation, ProbeRule, decide, grow, probe_rule, ramp
from consortium.probe.features import FeatureError, FeatureSpec, extract, extract_many, feature_dim
from consortium.probe.model import Probe, build, fit
from consortium.probe.trust import beta_trust, frozen_verdict

__all__ = [
    "Decision",
    "FeatureError",
    "FeatureSpec",
    "Observation",
    "Probe",
    "ProbeError",
    "ProbeRule",
    "beta_trust",
    "build",
    "check_fitted_for",
    "check_layout",
    "decide",
    "extract",
    "extract_many",
    "feature_dim",
    "fit",
    "frozen_verdict",
    "grow",
    "load",
    "load_file",
    "probe_rule",
    "publish",
    "ramp",
    "save",
]
