"""One typed run configuration: presets, TOML files and dotted `--set` overrides, with one-line errors,
and the digest every chain commitment names. Its tables are `consortium.config_sections`."""

from __future__ import annotations

import hashlib
import json
import tomllib
import warnings
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from consortium.aggregate_lora import check_rule
from consortium.attacks import AttackSpec, attackers_for
from consortium.config_sections import (
    ChainSection,
    DataSection,
    EvalSection,
    LoraSection,
    ModelSection,
    PrivacySection,
    ProbeSection,
    RaySection,
    Section,
    StrategySpec,
    TrainSection,
    blocking_seats,
)
from consortium.defense import AGGREGATORS, DefenseParams, needs

__all__ = [  # the tables, re-exported: `consortium.config` is where a run config's types are looked up
    "ChainSection",
    "ConfigError",
    "DataSection",
    "EvalSection",
    "LoraSection",
    "ModelSection",
    "PrivacySection",
    "ProbeSection",
    "RaySection",
    "RunConfig",
    "StrategySpec",
    "TrainSection",
    "config_digest",
    "load_config",
    "to_toml_dict",
]


class ConfigError(ValueError):
    """A configuration problem, phrased as one line naming the field and what was expected."""


class RunConfig(Section):
    """Everything a run depends on; the resolved copy is written into the run directory."""

    name: str = Field("demo", pattern=r"^[A-Za-z0-9._-]+$")
    seed: int = Field(0, ge=0)
    participants: int = Field(5, ge=1, le=10_000)
    rounds: int = Field(3, ge=1)
    aggregator: str = "fedavg"
    weighting: Literal["samples", "uniform"] = "samples"
    server_lr: float = Field(1.0, gt=0, le=100, description="server step on the aggregate (1 = FedAvg)")
    model: ModelSection = ModelSection()
    lora: LoraSection = LoraSection()
    data: DataSection = DataSection()
    train: TrainSection = TrainSection()
    eval: EvalSection = EvalSection()
    defense: DefenseParams = DefenseParams()
    attacks: tuple[Annotated[AttackSpec, Field(discriminator="kind")], ...] = ()
    protocol: Literal["chain", "central"] = Field(
        "chain", description="'chain': rounds through the contract; 'central': the centralised baseline"
    )
    chain: ChainSection = ChainSection()
    strategies: tuple[StrategySpec, ...] = ()
    probe: ProbeSection = ProbeSection()
    privacy: PrivacySection = PrivacySection()
    backend: Literal["inprocess", "ray"] = Field(
        "inprocess", description="where local training runs: this process, or Ray actors ([ray])"
    )
    ray: RaySection = RaySection()

    @model_validator(mode="after")
    def _enough_participants(self) -> RunConfig:
        need = sum(attackers_for(a.fraction, self.participants) for a in self.attacks)
        if need > self.participants:
            raise ValueError(
                f"the attacks need {need} attackers but there are {self.participants} participants"
            )
        need += sum(attackers_for(s.fraction, self.participants) for s in self.strategies)
        if need > self.participants:
            raise ValueError(
                f"attacks and strategies need {need} participants but there are {self.participants}"
            )
        if needs(self.aggregator).root and not self.data.domains:
            raise ValueError(
                f"aggregator {self.aggregator!r} needs built-in data.domains for its public root set"
            )
        if self.lora.variant == "flora":
            check_rule(self.aggregator)
            if self.privacy.on:
                raise ValueError(
                    "privacy: not supported with lora.variant 'flora' (clipping the factors does not bound "
                    "the product, and noise does not survive the re-projection; docs/lora_variants.md)"
                )
        if self.protocol == "chain":
            self._check_chain()
        return self

    def _check_chain(self) -> None:
        if self.probe.artifact is not None and self.probe.level != "client":
            raise ValueError(
                f"probe.level {self.probe.level!r} needs protocol = 'central': its evidence blobs have no "
                "place on chain yet (use level 'client', which scores the committed update)"
            )
        if needs(self.aggregator).root:
            raise ValueError(
                f"aggregator {self.aggregator!r} needs protocol = 'central': its root update has no place "
                "on chain yet"
            )
        proposers, voters = self.chain.roles(self.participants)
        if proposers < 1 or proposers + voters > self.participants:
            raise ValueError(
                f"chain: {proposers} proposers + {voters} voters per round need at least "
                f"{proposers + voters} participants, there are {self.participants}"
            )
        drawn = proposers + voters
        if blocking_seats(proposers, voters, self.chain.proposers_vote)[0] == 0:  # honest seats alone lose
            raise ValueError(
                f"chain: the {voters} voters of the {drawn} roles a round draws hold {voters} of its {drawn} "
                "equal stakes, not over a third: no candidate could ever be accepted; raise chain.n_voters "
                "or set chain.proposers_vote"
            )
        if self.chain.proposers_vote and proposers + voters > 32:
            raise ValueError(
                f"chain.proposers_vote: {proposers} proposers + {voters} voters make {proposers + voters} "
                "voting seats, the contract holds at most 32 (lower chain.n_proposers or chain.n_voters)"
            )
        if self.chain.min_stake > self.chain.stake:
            raise ValueError(f"chain.min_stake {self.chain.min_stake} exceeds chain.stake {self.chain.stake}")

    @field_validator("aggregator")
    @classmethod
    def _known_aggregator(cls, v: str) -> str:
        if v not in AGGREGATORS:
            raise ValueError(f"unknown aggregator {v!r}; known: {', '.join(sorted(AGGREGATORS))}")
        return v

    @field_validator("protocol", mode="before")
    @classmethod
    def _renamed_protocol(cls, v: Any) -> Any:
        if v == "fedavg":  # the rule's name; the baseline was renamed so the two cannot be confused
            warnings.warn(
                "protocol = 'fedavg' is now called 'central' (the centralised baseline); read as 'central'",
                FutureWarning,
                stacklevel=2,
            )
            return "central"
        return v


PRESETS = ("smoke", "demo", "bench")


def preset_dict(name: str) -> dict[str, Any]:
    """The raw TOML table of a built-in preset."""
    if name not in PRESETS:
        raise ConfigError(f"--preset: unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    text = resources.files("consortium.presets").joinpath(f"{name}.toml").read_text()
    return tomllib.loads(text)


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _parse_value(text: str) -> Any:
    """TOML syntax for a value (`3`, `1e-3`, `true`, `["a","b"]`); anything else is a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(data: dict[str, Any], assignment: str) -> dict[str, Any]:
    """Apply one dotted `key=value` to a raw config dict (new dict; the input is untouched)."""
    key, sep, value = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: expected key=value, e.g. --set rounds=3")
    update: dict[str, Any] = {}
    node = update
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = _parse_value(value.strip())
    return _merge(data, update)


def _format_error(err: ValidationError) -> str:
    e = err.errors()[0]
    field = ".".join(str(p) for p in e["loc"]) or "config"
    if e["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"{field}: unknown key"
    got = e.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    msg = e["msg"].removeprefix("Value error, ")
    return f"{field}: {msg}{shown}"


def load_config(
    path: Path | None = None, preset: str | None = None, overrides: list[str] | None = None
) -> RunConfig:
    """Preset (default `demo`) < TOML file < `--set` overrides; raises ConfigError naming the bad field."""
    data = preset_dict(preset or "demo")
    if path is not None:
        data = _merge(data, _read_toml(path))
    for o in overrides or []:
        data = apply_override(data, o)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


# Keys added after runs were first committed on chain, with the value that reproduces what came before
# them: at that value they are left out of the digest, so older run directories still audit. A key
# added later with a neutral value goes here; these values must never change.
DIGEST_NEUTRAL: dict[str, Any] = {
    "train.packing": False,
    "train.pack_len": 0,
    "train.compile": False,
    "train.fused_optimizer": True,  # foreach on CPU: bit-identical to the loop before it
    "train.bf16": False,
    "train.loss_chunk": 0,
    "train.gradient_checkpointing": False,
    "train.precision": "fp32",
    "train.prefix_cache": False,
    "train.prefix_cache_mb": 1024,
    "lora.layers": "all",
    "probe.shadow_steps": 0,
    "chain.proposal_bond_bps": 0,
    "chain.attackers_collude": True,
    "chain.proposers_vote": False,
    "defense.aggregation_version": 1,
}


def config_digest(cfg: RunConfig) -> str:
    """sha256 of the resolved config (all 256 bits: a 64-bit name could be matched by a search for
    another config): what every chain commitment names, so the audit can tell a config edited after
    the run (even one whose change leaves the aggregates as they were). Runs made before issue 22
    named its first 16 hex digits; the audit still accepts those (`digest_matches`)."""
    data = to_toml_dict(cfg)
    for key in ("backend", "ray"):  # where the training ran is not what was computed (docs/scale.md)
        data.pop(key, None)
    for dotted, neutral in DIGEST_NEUTRAL.items():
        section, key = dotted.split(".")
        if section in data and data[section].get(key, neutral) == neutral:
            data[section].pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


LEGACY_DIGEST_CHARS = 16  # the config digest's length before issue 22


def digest_matches(named: str, digest: str) -> bool:
    """Does a digest named in a commitment name this config? The full digest, or (runs made before
    issue 22) its first 16 hex digits."""
    return named == digest or (len(named) == LEGACY_DIGEST_CHARS and digest.startswith(named))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def to_toml_dict(cfg: RunConfig) -> dict[str, Any]:
    """JSON-safe dict of the resolved config, ready for tomli_w (paths as strings; TOML has no null,
    so unset optional values are left out and read back as their default None). A `[privacy]` section
    that is off, or a `[probe]` naming no artifact, is left out too, so the config digest of a run
    without them is what it was before they existed (and older run directories still audit)."""
    data = _drop_none(cfg.model_dump(mode="json"))
    if not cfg.privacy.on:
        del data["privacy"]
    if cfg.probe == ProbeSection():
        data.pop("probe", None)
    if cfg.backend == "inprocess" and cfg.ray == RaySection():
        data.pop("backend", None)
        data.pop("ray", None)
    return data
