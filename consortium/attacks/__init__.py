"""Malicious behaviours to test defences against: backdoor, adaptive (norm-bounded) backdoor, scaling /
model replacement, label flip, Gaussian noise, free riding and sybils, configurable per run."""

from consortium.attacks.adversary import Adversary, RoundView, SybilGroup, assign, attackers_for
from consortium.attacks.poison import add_trigger, backdoor_test_sets, flip_labels, poison_backdoor
from consortium.attacks.specs import (
    ATTACK_KINDS,
    AdaptiveBackdoorAttack,
    AttackSpec,
    BackdoorAttack,
    FreeRiderAttack,
    LabelFlipAttack,
    NoiseAttack,
    ScaleAttack,
    SybilAttack,
)
from consortium.attacks.tamper import gaussian, jitter, project_to_norm, scale

__all__ = [
    "ATTACK_KINDS",
    "AdaptiveBackdoorAttack",
    "Adversary",
    "AttackSpec",
    "BackdoorAttack",
    "FreeRiderAttack",
    "LabelFlipAttack",
    "NoiseAttack",
    "RoundView",
    "ScaleAttack",
    "SybilAttack",
    "SybilGroup",
    "add_trigger",
    "assign",
    "attackers_for",
    "backdoor_test_sets",
    "flip_labels",
    "gaussian",
    "jitter",
    "poison_backdoor",
    "project_to_norm",
    "scale",
]
