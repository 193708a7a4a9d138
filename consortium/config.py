"""One typed run configuration: presets, TOML files and dotted `--set` overrides, with one-line errors."""

from __future__ import annotations

import tomllib
import warnings
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FilePath, ValidationError, field_validator, model_validator

from consortium.aggregate_lora import check_rule
from consortium.attacks import AttackSpec, attackers_for
from consortium.defense import AGGREGATORS, DefenseParams, needs


class ConfigError(ValueError):
    """A configuration problem, phrased as one line naming the field and what was expected."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(_Section):
    """Which base model every participant fine-tunes."""

    name: str = Field(
        "smollm2", min_length=1, description="'tiny', 'tiny-warm', 'smollm2', an HF id or a local dir"
    )
    dtype: Literal["float32", "bfloat16"] = "float32"


class LoraSection(_Section):
    """The adapter every participant trains; `ffa` (A frozen, B trained) averages exactly; `flora` sums the
    products exactly and re-projects to rank r; `fedsb` trains only an r×r matrix (docs/lora_variants.md)."""

    variant: Literal["lora", "ffa", "flora", "fedsb"] = "ffa"
    r: int = Field(8, ge=1, le=1024)
    alpha: float = Field(16.0, gt=0)
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    seed: int = Field(0, ge=0)
    layers: str | tuple[int, ...] = Field(
        "all", description="decoder layers with adapters: 'all', 'top:k' or a list of indices (docs/speed.md)"
    )

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("at least one target module is required")
        return v

    @field_validator("layers", mode="before")
    @classmethod
    def _layers(cls, v: Any) -> str | tuple[int, ...]:
        from consortium.model.lora import check_layers

        return check_layers(v)


class DataSection(_Section):
    """Built-in domains and/or the user's own JSONL files, and how they are split among participants."""

    domains: tuple[str, ...] = ("arithmetic", "units", "dates", "strings", "policy")
    n_train: int = Field(200, ge=1, description="training examples per domain")
    n_test: int = Field(40, ge=1, description="test examples per domain")
    partition: Literal["domain", "dirichlet", "iid"] = "domain"
    dirichlet_alpha: float = Field(0.5, gt=0)
    jsonl: tuple[FilePath, ...] = Field((), description="extra JSONL files, one domain each (file stem)")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="held-out share of each JSONL file")
    system_prompt: str | None = Field(
        "You are a concise assistant.", description="system message; none = the template's default"
    )
    root_per_domain: int = Field(
        4, ge=1, description="FLTrust's public root set: clean built-in examples per domain"
    )


class TrainSection(_Section):
    """Local fine-tuning of one participant per round."""

    local_steps: int = Field(10, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    max_len: int = Field(128, ge=8)
    grad_clip: float = Field(1.0, gt=0)
    # fast paths (docs/speed.md): the defaults keep CPU results bit-identical to the plain loop
    packing: bool = Field(False, description="lay a batch's examples end to end; same loss, no padding")
    pack_len: int = Field(0, ge=0, description="tokens per packed row; 0 = the batch's longest example")
    compile: bool = Field(False, description="torch.compile the decoder on CUDA (CPU: docs/speed.md)")
    fused_optimizer: bool = Field(True, description="AdamW fused on CUDA, foreach on CPU")
    bf16: bool = Field(False, description="bf16 autocast on CUDA (ignored on CPU); see precision")
    precision: Literal["fp32", "auto", "bf16"] = Field(
        "fp32", description="autocast: 'auto' = bf16 where the device has it (CUDA, avx512_bf16/AMX CPUs)"
    )
    prefix_cache: bool = Field(
        False, description="cache the frozen layers below the lowest adapter (lora.layers); same loss"
    )
    prefix_cache_mb: int = Field(1024, ge=0, description="memory budget of that cache; beyond it, recompute")
    threads: int | None = Field(None, ge=1, description="torch threads; none = torch's default")
    loss_chunk: int = Field(0, ge=0, description="response positions per vocab-projection chunk; 0 = one")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward")


class EvalSection(_Section):
    """Exact match: a teacher-forced pass (greedy's verdict in one forward) or batched greedy decoding."""

    method: Literal["teacher_forced", "greedy"] = "teacher_forced"
    max_new_tokens: int = Field(8, ge=1)
    batch_size: int = Field(32, ge=1)
    isolated_baseline: bool = True


class ChainSection(_Section):
    """The contract run (`protocol = "chain"`): stakes, roles per round, rewards, slashes, how voters judge.

    Amounts are in ETH (the contract works in wei). Phase lengths are derived from the roles so that
    every role's transaction fits its window on the embedded EVM, which mines one block per transaction.
    """

    rpc_url: str | None = Field(None, description="JSON-RPC node; none = the embedded EVM")
    stake: float = Field(10.0, gt=0, description="ETH each participant stakes at registration")
    min_stake: float = Field(1.0, gt=0, description="ETH below which a participant is no longer drawn")
    reward_pool: float = Field(100.0, ge=0, description="ETH the deployer puts into the reward pool")
    reward_per_round: float = Field(0.3, ge=0, description="ETH split among a round's rewarded roles")
    n_proposers: int | None = Field(
        None, ge=1, le=32, description="none = participants - n_voters - participants // 10 (spares)"
    )
    n_voters: int | None = Field(
        None, ge=1, le=32, description="none = half the participants, and always more than a third"
    )
    slash_rejected_bps: int = Field(1000, ge=0, le=10_000)
    slash_minority_bps: int = Field(500, ge=0, le=10_000)
    slash_no_show_bps: int = Field(500, ge=0, le=10_000)
    quorum_bps: int = Field(5000, ge=1, le=10_000)
    holdout_fraction: float = Field(
        0.2, gt=0, lt=1, description="share of each participant's shard kept out of training to vote with"
    )
    accept_tolerance: float = Field(
        0.02, ge=0, description="a voter accepts if held-out loss(candidate) <= loss(global) * (1 + this)"
    )
    flag_loss_margin: float = Field(
        0.10, ge=0, description="a voter flags an update raising its held-out loss by more than this share"
    )
    base_margin: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="a voter also accepts if held-out loss(candidate) <= loss(initial adapter) * (1 - this): "
        "for non-IID consortia, where learning the others' domains costs some of one's own; none = off",
    )
    slash_excluded: bool = Field(
        False,
        description="slash updates the aggregator leaves out (Multi-Krum, Bulyan, FLAME) as if flagged; "
        "false = only evidence (screen, unavailable blob, voters' loss checks) is slashed, exclusions "
        "are merely not rewarded",
    )

    def roles(self, participants: int) -> tuple[int, int]:
        """(proposers, voters) per round for `participants` registered organisations. By default one
        in ten sits each round out: the contract cancels a round with fewer eligible participants
        than roles, so without spares the first stake slashed below `min_stake` halts every later
        round (measured in `bench/economics.py`). A candidate wins only with more than a third of the
        stake (docs/contract.md), so the voters must hold more than a third: half of the participants
        by default, which leaves the honest voters room for a coalition's voters among them."""
        voters = self.n_voters or min(32, max(1, participants // 2, participants // 3 + 1))
        proposers = self.n_proposers or min(32, participants - voters - participants // 10)
        return proposers, voters


class StrategySpec(_Section):
    """A non-attack behaviour in the decentralised round, given to a seeded share of the honest trainers.

    `lazy_voter` accepts the first candidate without evaluating; `colluding_voter` votes with the
    attackers for their unscreened candidate; `no_show` takes its role and never acts.
    """

    kind: Literal["lazy_voter", "colluding_voter", "no_show"]
    fraction: float = Field(0.1, ge=0, le=1)


class ProbeSection(_Section):
    """The probe defence (docs/probes.md): which artifact, at which level, and how scores become weights;
    the `train_*`, `classifier` and feature keys configure `consortium probe train`."""

    artifact: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="sha256 of the probe; none = no probe defence"
    )
    dir: Path | None = Field(None, description="directory holding <artifact>.safetensors (probe train --out)")
    level: Literal["client", "step", "shadow"] = "client"
    low: float = Field(0.3, ge=0, le=1, description="score at or below which a client keeps weight 1")
    high: float = Field(0.7, ge=0, le=1, description="score at or above which its weight is 0")
    flag_below: float = Field(0.5, ge=0, le=1, description="(averaged) weight below which it is flagged")
    average_rounds: bool = True
    step_every: int = Field(1, ge=1, description="step level: snapshot the delta every k local steps")
    step_threshold: float = Field(0.5, ge=0, le=1, description="step level: harmful-step score")
    decay: float = Field(0.8, ge=0, le=1, description="step level: Beta-count decay per round")
    shadow_lr: float = Field(2e-3, gt=0, description="shadow level: the shadow branch's fixed lr")
    shadow_steps: int = Field(
        0, ge=0, description="shadow level: the shadow branch's local steps (0 = train.local_steps)"
    )
    evidence_m: int = Field(0, ge=0, description="freeze a client after m identical verdicts (0 = off)")
    classifier: Literal["logreg", "mlp"] = "mlp"
    modules: tuple[str, ...] = Field((), description="feature tensors: name substrings; () = all")
    norm_stats: bool = True
    sketch_dim: int = Field(0, ge=0, description="count-sketch the features to this size (0 = off)")
    train_seeds: tuple[int, ...] = (0, 1, 2)
    heldout_seeds: tuple[int, ...] = (3,)
    train_rounds: int = Field(3, ge=1, description="simulated rounds per seed when building the set")
    fit_exclude: tuple[str, ...] = Field(
        ("free_rider", "noise"),
        description="attack kinds simulated and tested on but never fitted on (see docs/probes.md)",
    )

    @model_validator(mode="after")
    def _ramp(self) -> ProbeSection:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.artifact is not None and self.dir is None:
            raise ValueError("artifact needs dir: the directory `consortium probe train --out` wrote")
        return self


class PrivacySection(_Section):
    """Client-level DP-FedAvg (docs/privacy.md): clip each update to L2 norm `clip`, add Gaussian noise
    of multiplier `noise_multiplier` (or the one `target_epsilon` needs over the run) centrally to the
    aggregate from the round's public seed, or in shares by each participant (`distributed`)."""

    mode: Literal["off", "central", "distributed"] = "off"
    clip: float | None = Field(None, gt=0, description="L2 bound C of each update")
    noise_multiplier: float | None = Field(None, ge=0, description="z: noise std = z x sensitivity")
    target_epsilon: float | None = Field(None, gt=0, description="derive z for this ε over all rounds")
    delta: float | None = Field(None, gt=0, lt=1, description="δ of the (ε, δ) guarantee")
    accountant: Literal["rdp", "pld"] = "rdp"
    epsilon_budget: float | None = Field(
        None, gt=0, description="stop before a round that would take ε past this"
    )

    @model_validator(mode="after")
    def _consistent(self) -> PrivacySection:
        if self.mode == "off":
            return self
        if self.clip is None:
            raise ValueError(f"clip is required when mode is {self.mode!r}")
        if self.noise_multiplier is not None and self.target_epsilon is not None:
            raise ValueError("give noise_multiplier or target_epsilon, not both")
        if self.noise_multiplier is None and self.target_epsilon is None:
            raise ValueError(f"noise_multiplier or target_epsilon is required when mode is {self.mode!r}")
        noisy = self.target_epsilon is not None or (self.noise_multiplier or 0) > 0
        if noisy and self.delta is None:
            raise ValueError("delta is required when noise is added (noise_multiplier > 0 or target_epsilon)")
        if self.epsilon_budget is not None and not noisy:
            raise ValueError("epsilon_budget needs noise: with noise_multiplier = 0, ε is infinite")
        return self

    @property
    def on(self) -> bool:
        return self.mode != "off"


class RaySection(_Section):
    """The Ray backend (`backend = "ray"`): participants' local training runs in Ray actors, each holding
    one copy of the base model; aggregation, ledger and chain stay in the driver (docs/scale.md)."""

    address: str | None = Field(
        None, description="cluster to join ('host:port', 'ray://host:port', 'auto'); none = start a local one"
    )
    workers: int | None = Field(None, ge=1, description="actors; none = the cluster's CPUs / cpus_per_worker")
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float | None = Field(
        None, ge=0, description="none = share the cluster's GPUs among the actors (at most 1 each), 0 without"
    )
    threads: int | None = Field(
        None, ge=1, description="torch threads per actor; none = the driver's (bit-identical CPU results)"
    )
    connect_timeout: float = Field(5.0, gt=0, description="seconds to wait for ray.address to answer")


class RunConfig(_Section):
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


PRESETS = ("smoke", "demo")


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
}


def config_digest(cfg: RunConfig) -> str:
    """sha256 of the resolved config (all 256 bits: a 64-bit name could be matched by a search for
    another config): what every chain commitment names, so the audit can tell a config edited after
    the run (even one whose change leaves the aggregates as they were). Runs made before issue 22
    named its first 16 hex digits; the audit still accepts those (`digest_matches`)."""
    import hashlib
    import json

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
