"""Malicious behaviours to test defences against: backdoor, adaptive (norm-bounded) backdoor, scaling /
model replacement, label flip, Gaussian noise, free riding, sybils and harmful fine-tuning, configurable
per run."""

from consortium.attacks.adversary import Adversary, RoundView, SybilGroup, assign, attackers_for
from consortium.attacks.harmful import harmful_sets, poison_harmful
from consortium.attacks.poison import add_trigger, backdoor_test_sets, flip_labels, poison_backdoor
from consortium.attacks.specs import (
    ATTACK_KINDS,
    AdaptiveBackdoorAttack,
    AttackSpec,
    BackdoorAttack,
    FreeRiderAttack,
    HarmfulAttack,
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
    "HarmfulAttack",
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
    "harmful_sets",
    "jitter",
    "poison_backdoor",
    "poison_harmful",
    "project_to_norm",
    "scale",
]
