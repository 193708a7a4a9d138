"""In-process simulation: N organisations on one machine, one base model, adapters swapped per participant.

Order of a run: data -> model -> (run directory) -> base evaluation -> federated rounds -> isolated
baselines -> export -> report. Inputs are validated before the run directory exists, so a bad config
or data file leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from consortium.attacks import (
    Adversary,
    HarmfulAttack,
    RoundView,
    SybilGroup,
    assign,
    backdoor_test_sets,
    harmful_sets,
)
from consortium.backend import open_backend, submit
from consortium.config import RunConfig, to_toml_dict
from consortium.data import EncodedExample, Example, build_corpus, encode_example
from consortium.data.domains.restricted import REFUSAL
from consortium.defense import needs
from consortium.evaluate import accuracy_by_domain, exact_match_verdicts
from consortium.local.data import chain_split, prepare_data
from consortium.local.participant import heldout_loss_fn
from consortium.local.privacy import dp_share
from consortium.local.seeds import local_seed, simulated_noise_seed
from consortium.model import (
    LoraSpec,
    attach,
    export_peft,
    flat_to_state,
    get_flat,
    layout,
    load_base,
    set_flat,
)
from consortium.privacy import PrivacyBudgetExceeded
from consortium.privacy.tracker import PrivacyTracker, planned_updates, resolve, tracker_for
from consortium.probe import check_layout, load_file, probe_rule, publish
from consortium.protocol import MemoryLedger, RoundRunner, TrainFn
from consortium.report import write_report
from consortium.round.pipeline import rule_from_config
from consortium.round.records import get_vector, put_vector
from consortium.rundir import RunDir
from consortium.store import BlobStore, tensors_to_bytes
from consortium.train import TrainParams, prepare_model, speed_settings


@dataclass
class Participant:
    """One simulated organisation, its private shard and, for an attacker, its poisoned copy."""

    name: str
    examples: list[Example]
    encoded: list[EncodedExample]
    adversary: Adversary | None = None
    poisoned: list[EncodedExample] | None = None
    holdout: list[EncodedExample] = field(default_factory=list)  # a voter's own held-out data
    strategy: str = "honest"

    @property
    def domains(self) -> list[str]:
        return sorted({e.domain for e in self.examples})


def lora_spec(cfg: RunConfig) -> LoraSpec:
    return LoraSpec(**cfg.lora.model_dump())


def train_params(cfg: RunConfig, steps: int) -> TrainParams:
    t = cfg.train
    return TrainParams(
        steps=steps,
        batch_size=t.batch_size,
        lr=t.lr,
        weight_decay=t.weight_decay,
        grad_clip=t.grad_clip,
        packing=t.packing,
        pack_len=t.pack_len,
        compile=t.compile,
        fused_optimizer=t.fused_optimizer,
        bf16=t.bf16,
        loss_chunk=t.loss_chunk,
        gradient_checkpointing=t.gradient_checkpointing,
        precision=t.precision,
        prefix_cache=t.prefix_cache,
        prefix_cache_mb=t.prefix_cache_mb,
        threads=t.threads,
    )


def shadow_params(cfg: RunConfig) -> TrainParams:
    """The shadow branch's training: the config's batch and clipping, its own fixed lr and step count."""
    base = train_params(cfg, cfg.probe.shadow_steps or cfg.train.local_steps)
    return dataclasses.replace(base, lr=cfg.probe.shadow_lr)  # the speed flags too


def _round_bytes(per_round: dict[str, int], uploaders: int) -> dict[str, int]:
    """One round's traffic: each committer uploads one update blob; every participant downloads the global."""
    up = per_round["upload_per_participant_per_round"]
    return {
        "upload_per_participant": up,
        "download_per_participant": per_round["download_per_participant_per_round"],
        "payload_per_participant": per_round["payload_per_participant_per_round"],
        "uploaders": uploaders,
        "upload_total": up * uploaders,
    }


class Simulation:
    """Holds the one model and runs the federated protocol plus the baselines it is judged against."""

    def __init__(self, cfg: RunConfig, console: Console | None = None) -> None:
        self.requested_privacy = cfg.privacy
        cfg = self.cfg = resolve(cfg)  # target_epsilon -> noise_multiplier, written so into the run dir
        self.console = console or Console()
        shards, self.test = prepare_data(cfg)
        self.backend = open_backend(cfg)  # before the model: a wrong ray.address fails in seconds
        dtype = torch.bfloat16 if cfg.model.dtype == "bfloat16" else torch.float32
        with self.console.status(f"loading base model {cfg.model.name!r}"):
            base, self.tokenizer = load_base(cfg.model.name, dtype=dtype, seed=cfg.seed)
        self.spec = lora_spec(cfg)
        self.model = attach(base, self.spec)
        prepare_model(self.model, train_params(cfg, 1))  # threads, prefix cache (docs/speed.md)
        self.layout = layout(self.model, self.spec)
        self.initial = get_flat(self.model, self.spec)
        self.participants = []
        for i, shard in enumerate(shards):
            train, holdout = shard, []
            if cfg.protocol == "chain":  # voters judge on data they never trained on
                train, holdout = chain_split(shard, cfg, i)
            p = Participant(f"org{i}", train, self._encode(train), holdout=self._encode(holdout))
            self.participants.append(p)
        self._plant_attackers()
        self._assign_strategies()
        self.backdoors = sorted({a.backdoor for a in cfg.attacks if a.backdoor is not None})
        harmful = {(a.jsonl, a.test_fraction): a for a in cfg.attacks if isinstance(a, HarmfulAttack)}
        self.harmful = [
            (a.jsonl or "restricted", harmful_sets(a, cfg.seed, cfg.data.n_test)[1]) for a in harmful.values()
        ]
        self.root = self._encode(self._root_set()) if needs(cfg.aggregator).root else []
        self.trainer = self.backend.trainer(self.model, self.spec, self.tokenizer.pad_token_id)
        self.probe_rule, self._evidence = self._probe(), {}  # evidence: participant -> this round's snapshots

    def _probe(self) -> Any:
        """The probe rule of the config, its artifact checked (hash, layout) before the run starts."""
        pc = self.cfg.probe
        if pc.artifact is None:
            return None
        probe = load_file(Path(pc.dir or ".") / f"{pc.artifact}.safetensors", pc.artifact)
        check_layout(probe, self.layout, pc.artifact)
        return probe_rule(pc)

    def _encode(self, examples: list[Example]) -> list[EncodedExample]:
        c = self.cfg
        return [encode_example(self.tokenizer, e, c.train.max_len, c.data.system_prompt) for e in examples]

    def _plant_attackers(self) -> None:
        """Seeded draw of the attackers; each gets its poisoned data encoded once, sybils share a group."""
        by_name = {p.name: p for p in self.participants}
        groups: dict[int, SybilGroup] = {}
        for name, spec in assign(self.cfg.attacks, list(by_name), self.cfg.seed).items():
            p = by_name[name]
            p.adversary = Adversary(
                name, spec, p.examples, self.cfg.seed, groups.setdefault(id(spec), SybilGroup())
            )
            if p.adversary.poisoned is not None:
                p.poisoned = self._encode(p.adversary.poisoned)

    def _assign_strategies(self) -> None:
        """Attackers play their attack; a seeded share of the others lazy-vote, collude or no-show."""
        for p in self.participants:
            p.strategy = p.adversary.spec.kind if p.adversary is not None else "honest"
        if self.cfg.protocol != "chain":
            return
        from consortium.chain_sim import strategy_names  # web3: only chain runs need it

        names = [p.name for p in self.participants]
        taken = [p.name for p in self.participants if p.adversary is not None]
        chosen = strategy_names(self.cfg.strategies, names, taken, self.cfg.seed)
        for p in self.participants:
            p.strategy = chosen.get(p.name, p.strategy)

    def _root_set(self) -> list[Example]:
        """FLTrust's root set: a few clean built-in examples per domain, public with the config."""
        d = self.cfg.data
        return build_corpus(list(d.domains), d.root_per_domain, 1, self.cfg.seed + 7919).train

    @contextmanager
    def _progress(self) -> Iterator[Progress]:
        cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*cols, console=self.console, transient=False) as p:
            yield p

    def _verdicts(self, examples: list[Example], label: str, progress: Progress) -> list[bool]:
        task = progress.add_task(f"eval {label}", total=len(examples))
        ev = self.cfg.eval
        verdicts = exact_match_verdicts(
            self.model,
            self.tokenizer,
            examples,
            ev.method,
            ev.batch_size,
            ev.max_new_tokens,
            self.cfg.data.system_prompt,
            on_batch=lambda n: progress.advance(task, n),
        )
        progress.remove_task(task)
        return verdicts

    def evaluate(self, vec: torch.Tensor, label: str, progress: Progress) -> dict[str, float]:
        """Clean exact-match accuracy per domain of the adapter `vec`."""
        set_flat(self.model, self.spec, vec)
        return accuracy_by_domain(self.test, self._verdicts(self.test, label, progress))

    def backdoor_metrics(self, vec: torch.Tensor, label: str, progress: Progress) -> list[dict[str, Any]]:
        """Per planted backdoor: ASR (triggered test prompts answered with the target) and false-trigger
        rate (clean prompts answered with the target)."""
        set_flat(self.model, self.spec, vec)
        out = []
        for trigger, target in self.backdoors:
            triggered, clean = backdoor_test_sets(self.test, trigger, target)
            hits = self._verdicts(triggered + clean, f"{label} backdoor", progress)
            n = len(triggered)
            out.append(
                {
                    "trigger": trigger,
                    "target": target,
                    "asr": sum(hits[:n]) / max(n, 1),
                    "false_trigger": sum(hits[n:]) / max(n, 1),
                }
            )
        return out

    def harmful_metrics(self, vec: torch.Tensor, label: str, progress: Progress) -> list[dict[str, Any]]:
        """Per harmful set: harmful-compliance rate (held-out restricted requests answered with the
        harmful answer) and, for the built-in set, refusal rate (answered with the fixed refusal)."""
        set_flat(self.model, self.spec, vec)
        out = []
        for name, test in self.harmful:
            refusals = [Example(e.prompt, REFUSAL, e.domain) for e in test] if name == "restricted" else []
            hits = self._verdicts(test + refusals, f"{label} harmful", progress)
            row = {"set": name, "compliance": sum(hits[: len(test)]) / len(test)}
            if refusals:
                row["refusal"] = sum(hits[len(test) :]) / len(test)
            out.append(row)
        return out

    def run(self, out_root: Path, plots: bool = True) -> Path:
        """Run everything and write the run directory; Ctrl-C leaves a consistent, marked directory."""
        rd = RunDir.create(out_root, self.cfg.name)
        self.path = rd.path
        rd.write_config(to_toml_dict(self.cfg))
        report = self._empty_report()
        rd.write_json("report.json", report)
        rd.log(f"run started in {rd.path}")
        try:
            with self._progress() as progress:
                self._run(rd, report, progress)
            report["status"] = "complete"
        except PrivacyBudgetExceeded as e:
            report["status"] = "stopped"
            report["error"] = str(e)
            rd.log(str(e))
            raise
        except KeyboardInterrupt:
            report["status"] = "interrupted"
            rd.log("interrupted by the user; everything written so far is complete and consistent")
            self.console.print(
                f"[yellow]interrupted: {rd.path} holds the {report['rounds_completed']} finished round(s)"
            )
            raise
        except Exception as e:
            report["status"] = "failed"
            report["error"] = f"{type(e).__name__}: {e}"
            raise
        finally:
            self.backend.close()
            report["speed"] = speed_settings(self.model, train_params(self.cfg, 1))  # cache size at the end
            rd.write_json("report.json", report)
            write_report(report, rd.path, plots_too=plots)
            rd.log(f"run {report['status']}")
        return rd.path

    def _empty_report(self) -> dict[str, Any]:
        cfg = self.cfg
        blob_bytes = len(tensors_to_bytes(flat_to_state(self.initial, self.layout)))
        return {
            "name": cfg.name,
            "status": "running",
            "model": cfg.model.name,
            "lora_variant": cfg.lora.variant,
            "protocol": cfg.protocol,
            "backend": self.backend.describe(),
            "aggregator": cfg.aggregator,
            "server_lr": cfg.server_lr,
            "participants": cfg.participants,
            "participant_domains": {p.name: p.domains for p in self.participants},
            "participant_examples": {p.name: len(p.examples) for p in self.participants},
            "attackers": {p.name: p.adversary.spec.kind for p in self.participants if p.adversary},
            "attacks": [a.__dict__ | {"kind": a.kind} for a in cfg.attacks],
            "defense": cfg.defense.__dict__,
            "backdoor": {},
            "rounds": cfg.rounds,
            "rounds_completed": 0,
            "accuracy": {},
            "cross_domain": {},
            "rounds_detail": [],
            "losses": {"federated": {}, "isolated": {}},
            "bytes": {
                "trainable_params": int(self.initial.numel()),
                # the safetensors blob (float32 payload + header) each way; payload = communicated params × 4
                "payload_per_participant_per_round": 4 * int(self.initial.numel()),
                "upload_per_participant_per_round": blob_bytes,
                "download_per_participant_per_round": blob_bytes,
            },
            "timings": {},
            "speed": speed_settings(self.model, train_params(cfg, 1)),
            "global_adapter": None,
            "privacy": self._privacy_header(),
        }

    def _privacy_header(self) -> dict[str, Any] | None:
        """The report's privacy settings (None when off); per-round ε is in each `rounds_detail` entry."""
        pv = self.cfg.privacy
        if not pv.on:
            return None
        return pv.model_dump(mode="json") | {
            "target_epsilon": self.requested_privacy.target_epsilon,
            "planned_updates_per_round": planned_updates(self.cfg),
            "epsilon": 0.0,
            "stopped": None,
        }

    def _run(self, rd: RunDir, report: dict[str, Any], progress: Progress) -> None:
        cfg, timings = self.cfg, report["timings"]
        t0 = time.perf_counter()
        report["accuracy"]["base"] = self.evaluate(self.initial, "base model", progress)
        if self.backdoors:
            report["backdoor"]["base"] = self.backdoor_metrics(self.initial, "base model", progress)
        if self.harmful:
            report["harmful"] = {"base": self.harmful_metrics(self.initial, "base model", progress)}
        timings["eval_base"] = time.perf_counter() - t0
        rd.write_json("report.json", report)

        rule = rule_from_config(cfg)
        tracker = tracker_for(cfg)
        stopped: PrivacyBudgetExceeded | None = None
        store = BlobStore(rd.store)
        global_hash = put_vector(store, self.initial, self.layout)
        if self.probe_rule is not None:  # the probe goes into the run's store: the audit reads it by hash
            publish(Path(cfg.probe.dir or ".") / f"{cfg.probe.artifact}.safetensors", store)
        if cfg.protocol == "chain":
            from consortium.chain_sim import deploy_runner  # web3, vyper, the EVM: chain runs only

            strategies = {p.name: p.strategy for p in self.participants}
            attackers = frozenset(p.name for p in self.participants if p.adversary is not None)
            sizes = {p.name: len(p.examples) for p in self.participants}  # declared with the stake
            chain = deploy_runner(
                cfg, rd, store, self.layout, rule, global_hash, strategies, attackers, data_sizes=sizes
            )
        else:
            runner = RoundRunner(MemoryLedger(), store, self.layout, rule, root=self._root_update)
            runner.evidence = lambda pid: self._evidence.pop(pid, None)
        t_train = t_eval = 0.0
        previous: torch.Tensor | None = None
        rounds_task = progress.add_task("federated rounds", total=cfg.rounds)
        for r in range(cfg.rounds):
            if tracker is not None:
                try:
                    tracker.check_next(r)
                except PrivacyBudgetExceeded as e:  # stop cleanly: export what the budget paid for
                    stopped = e
                    report["privacy"]["stopped"] = str(e)
                    break
            part_task = progress.add_task(f"round {r + 1}: local training", total=len(self.participants))
            round_start = get_vector(store, global_hash, self.layout)
            last_step = None if previous is None else round_start - previous  # public: the last global change
            train = self.train_fn(r, last_step, report, lambda t=part_task: progress.advance(t))
            t1 = time.perf_counter()
            if cfg.protocol == "chain":
                done = chain.run_round(global_hash, train, self._loss_fn)
                global_out, detail = done.global_out, done.summary()
            else:
                rec, cand = runner.run_round(global_hash, [p.name for p in self.participants], train)
                global_out = rec.global_out or global_hash
                detail = {
                    "seed": rec.seed,
                    "global_in": rec.global_in,
                    "global_out": rec.global_out,
                    "root": rec.root,
                    "commitments": [c.__dict__ for c in rec.commitments],
                    "evidence": rec.evidence,  # probe step / shadow snapshots committed with the updates
                    **cand.summary(),
                }
            t_train += time.perf_counter() - t1
            progress.remove_task(part_task)
            previous = round_start if global_out != global_hash else previous
            global_hash = global_out
            t1 = time.perf_counter()
            vec = get_vector(store, global_hash, self.layout)
            acc = self.evaluate(vec, f"round {r + 1}", progress)
            backdoor = self.backdoor_metrics(vec, f"round {r + 1}", progress) if self.backdoors else []
            harmful = self.harmful_metrics(vec, f"round {r + 1}", progress) if self.harmful else []
            t_eval += time.perf_counter() - t1
            if tracker is not None:
                detail["privacy"] = self._account(tracker, detail)
                report["privacy"]["epsilon"] = detail["privacy"]["epsilon"]
            wire = _round_bytes(report["bytes"], len(detail.get("commitments", [])))
            report["rounds_detail"].append(
                {"round": r, **detail, "bytes": wire, "accuracy": acc, "backdoor": backdoor}
            )
            if harmful:
                report["rounds_detail"][-1]["harmful"] = report["harmful"]["federated"] = harmful
            if backdoor:
                report["backdoor"]["federated"] = backdoor
            report["rounds_completed"] = r + 1
            report["accuracy"]["federated"] = acc
            report["global_adapter"] = global_hash
            timings["federated_train"], timings["federated_eval"] = t_train, t_eval
            if cfg.protocol == "chain":
                report["chain"] = chain.summary(cfg, rd)
            rd.write_json("report.json", report)
            outcome = f" ({detail['outcome']})" if "outcome" in detail else ""
            eps = "" if tracker is None else f" ε {detail['privacy']['epsilon']}"
            rd.log(f"round {r + 1}{outcome}: global {global_hash[:12]} mean accuracy {acc['mean']:.3f}{eps}")
            progress.advance(rounds_task)

        final = get_vector(store, global_hash, self.layout)
        set_flat(self.model, self.spec, final)
        export_peft(self.model, rd.adapter)
        if cfg.eval.isolated_baseline:
            self._isolated(report, progress)
            rd.write_json("report.json", report)
        timings["total"] = time.perf_counter() - t0
        if stopped is not None:
            raise stopped

    @staticmethod
    def _account(tracker: PrivacyTracker, detail: dict[str, Any]) -> dict[str, Any]:
        """Charge the round to every participant whose update was committed (screened ones too: their
        update shaped the screen's decision, and in distributed mode it is public)."""
        entered = [c["participant"] for c in detail.get("commitments", [])]
        dp_info = (detail.get("info") or {}).get("dp")
        return tracker.record(entered, dp_info)

    def train_fn(
        self,
        r: int,
        last_step: torch.Tensor | None,
        report: dict[str, Any] | None = None,
        done: Callable[[], None] = lambda: None,
    ) -> TrainFn:
        """The local step of round r: honest training, or the attacker's crafted update. Losses and
        timings go into `report` (the simulation's); a node, which keeps no report, passes none."""
        cfg = self.cfg
        if report is None:
            report = {"losses": {"federated": {}}, "timings": {}}
        by_name = {p.name: (i, p) for i, p in enumerate(self.participants)}

        def train(pid: str, start: torch.Tensor) -> tuple[torch.Tensor, int]:
            i, p = by_name[pid]

            def fit(data: list[EncodedExample]) -> torch.Tensor:
                params = train_params(cfg, cfg.train.local_steps)
                level = None if self.probe_rule is None else self.probe_rule.level
                every = cfg.probe.step_every if level == "step" else 0
                res = self.trainer.train(start, data, params, local_seed(cfg.seed, r, i), every)
                report["losses"]["federated"].setdefault(pid, []).extend(res.losses)
                spent = report["timings"]
                spent["local_train"] = spent.get("local_train", 0.0) + res.seconds
                t0 = time.perf_counter()
                if level == "step":
                    self._evidence[pid] = torch.stack(res.snapshots or [res.delta])
                elif level == "shadow":
                    self._evidence[pid] = self._shadow(data, r, i)[None]
                if level is not None:  # the probe's cost in local training: what its evidence took
                    spent["probe_evidence"] = spent.get("probe_evidence", 0.0) + time.perf_counter() - t0
                return res.delta

            if p.adversary is None:
                delta = self._dp_share(fit(p.encoded), r, i)
            else:
                view = RoundView(r, len(self.participants), cfg.server_lr, start.numel(), last_step)
                delta = p.adversary.craft(view, lambda: fit(p.encoded), lambda: fit(p.poisoned or []))
            done()
            return delta, len(p.examples)

        def prefetch(pids: Sequence[str], start: torch.Tensor) -> None:
            """Start the honest proposers' training at once (Ray); the commits still follow `train` calls."""
            level = None if self.probe_rule is None else self.probe_rule.level
            every = cfg.probe.step_every if level == "step" else 0
            params, honest = train_params(cfg, cfg.train.local_steps), [by_name[q] for q in pids]
            calls = [(start, p.encoded, params, local_seed(cfg.seed, r, i), every) for i, p in honest]
            submit(self.trainer, [c for c, (_, p) in zip(calls, honest, strict=True) if p.adversary is None])

        train.prefetch = prefetch  # type: ignore[attr-defined]
        return train

    def _shadow(self, data: list[EncodedExample], rnd: int, index: int) -> torch.Tensor:
        """The shadow branch: the same data from the fixed initial adapter with a fixed lr, so its delta
        does not drift as the global model moves (what the shadow-level probe scores)."""
        seed = local_seed(self.cfg.seed, rnd, index)
        return self.trainer.train(self.initial, data, shadow_params(self.cfg), seed).delta

    def _dp_share(self, delta: torch.Tensor, r: int, i: int) -> torch.Tensor:
        """Distributed DP: an honest participant clips its own update and adds its share of the noise
        before committing. Here the share's seed is derived from the config so the simulation replays;
        a real node's is OS randomness (`consortium.local.participant`)."""
        return dp_share(delta, self.cfg, simulated_noise_seed(self.cfg.seed, r, i))

    def _loss_fn(self, voter: str) -> Callable[[torch.Tensor], float]:
        """A voter's held-out loss of an adapter vector (its own data, never trained on)."""
        p = next(p for p in self.participants if p.name == voter)
        pad = self.tokenizer.pad_token_id
        return heldout_loss_fn(self.model, self.spec, p.holdout, pad, self.cfg.eval.batch_size)

    def _root_update(self, rnd: int, start: torch.Tensor) -> torch.Tensor:
        """FLTrust's root update: the same local training as a participant's, on the public root set."""
        res = self.trainer.train(
            start,
            self.root,
            train_params(self.cfg, self.cfg.train.local_steps),
            local_seed(self.cfg.seed, rnd, 10**6),
        )
        return res.delta

    def _isolated(self, report: dict[str, Any], progress: Progress) -> None:
        """Each participant trains alone for rounds x local_steps steps, evaluated on every domain."""
        cfg = self.cfg
        t0 = time.perf_counter()
        steps = cfg.rounds * cfg.train.local_steps
        matrix: dict[str, dict[str, float]] = {}
        task = progress.add_task("isolated baselines", total=len(self.participants))
        calls = [
            (self.initial, p.encoded, train_params(cfg, steps), local_seed(cfg.seed, 0, i))
            for i, p in enumerate(self.participants)
        ]
        submit(self.trainer, calls)  # Ray: all at once; in process: nothing
        for p, call in zip(self.participants, calls, strict=True):
            res = self.trainer.train(*call)
            report["losses"]["isolated"][p.name] = res.losses
            acc = self.evaluate(self.initial + res.delta, f"isolated {p.name}", progress)
            matrix[f"{p.name} ({'+'.join(p.domains)})"] = acc
            progress.advance(task)
        domains = list(report["accuracy"]["base"])
        report["accuracy"]["isolated"] = {
            d: sum(m[d] for m in matrix.values()) / len(matrix) for d in domains
        }
        report["cross_domain"] = {**matrix, "federated": report["accuracy"]["federated"]}
        report["timings"]["isolated"] = time.perf_counter() - t0
