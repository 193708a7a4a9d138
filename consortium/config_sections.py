"""The tables of a run config (`[model]`, `[lora]`, `[data]`, `[train]`, `[eval]`, `[chain]`,
`[[strategies]]`, `[probe]`, `[privacy]`, `[ray]`): each key's type, range and one-line description.
`consortium.config.RunConfig` puts them together and checks what spans several tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FilePath, field_validator, model_validator


class Section(BaseModel):
    """A table of the run config: unknown keys are an error, and a loaded config is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(Section):
    """Which base model every participant fine-tunes."""

    name: str = Field(
        "smollm2", min_length=1, description="'tiny', 'tiny-warm', 'smollm2', an HF id or a local dir"
    )
    dtype: Literal["float32", "bfloat16"] = "float32"


class LoraSection(Section):
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
        from consortium.model.lora import (
            check_layers,  # import time: consortium.model loads peft and transformers
        )

        return check_layers(v)


class DataSection(Section):
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


class TrainSection(Section):
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
    attention: Literal["sdpa", "eager"] | None = Field(
        None,
        description="attention implementation; none = the model's (sdpa). On CPU with short rows eager is "
        "faster: SDPA's CPU backward is a quarter of a step (docs/speed.md)",
    )
    loss_chunk: int = Field(0, ge=0, description="response positions per vocab-projection chunk; 0 = one")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward")


class EvalSection(Section):
    """Exact match: a teacher-forced pass (greedy's verdict in one forward) or batched greedy decoding."""

    method: Literal["teacher_forced", "greedy"] = "teacher_forced"
    max_new_tokens: int = Field(8, ge=1)
    batch_size: int = Field(32, ge=1)
    isolated_baseline: bool = True


def blocking_seats(proposers: int, voters: int, proposers_vote: bool) -> tuple[int, int]:
    """(k, seats): with equal stakes, the fewest colluding seats among the `seats` that vote which block
    every honest candidate by voting for one of their own. A winner needs over a third of the draw's
    weight (all P + V roles) and over half of the revealed weight (`finalize`, docs/contract.md): the
    honest seats must hold both. Liveness, not safety: blocking is not carrying a candidate of theirs."""
    seats = proposers + voters if proposers_vote else voters
    k = 0
    while 3 * (seats - k) > proposers + voters and 2 * (seats - k) > seats:
        k += 1
    return k, seats


class ChainSection(Section):
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
    proposal_bond_bps: int = Field(
        50,
        ge=0,
        le=10_000,
        description="share of its stake a proposer forfeits when the accepted candidate excludes its update "
        "(a robust rule's or a probe's verdict): proposing pays only with inclusion (docs/protocol.md)",
    )
    proposers_vote: bool = Field(
        False,
        description="the round's proposers vote too (seats after the drawn voters'): with the voters they "
        "hold enough stake that a coalition below a third cannot block the honest candidate by "
        "outvoting it (docs/protocol.md, 'Since issue 22: who can win a round')",
    )
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
    attackers_collude: bool = Field(
        True,
        description="simulation only: attackers vote with the colluding voters for an unscreened candidate; "
        "false = they vote as honest voters do and only their updates attack (docs/protocol.md, item 7)",
    )
    slash_excluded: bool = Field(
        False,
        description="slash updates the aggregator leaves out (Multi-Krum, Bulyan, FLAME) as if flagged; "
        "false = only evidence anyone can recompute (screen verdicts, invalid or unavailable blobs) is "
        "slashed, exclusions are merely not rewarded",
    )

    def roles(self, participants: int) -> tuple[int, int]:
        """(proposers, voters) per round for `participants` registered organisations. By default one
        in ten sits each round out, so that the roles stay full when a stake falls below `min_stake`
        (the contract then draws everyone eligible, fewer roles: `chain.round_shape`). A candidate
        wins only with more than a third of the stake (docs/contract.md), so the voters must hold more
        than a third: half of the participants by default, which leaves the honest voters room for a
        coalition's voters among them."""
        voters = self.n_voters or min(32, max(1, participants // 2, participants // 3 + 1))
        proposers = self.n_proposers or min(32, participants - voters - participants // 10)
        return proposers, voters


class StrategySpec(Section):
    """A non-attack behaviour in the decentralised round, given to a seeded share of the honest trainers.

    `lazy_voter` accepts the first candidate without evaluating; `colluding_voter` votes with the
    attackers for their unscreened candidate; `no_show` takes its role and never acts.
    """

    kind: Literal["lazy_voter", "colluding_voter", "no_show"]
    fraction: float = Field(0.1, ge=0, le=1)


class ProbeSection(Section):
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


class PrivacySection(Section):
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


class RaySection(Section):
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
