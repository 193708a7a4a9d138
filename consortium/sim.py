"""In-process simulation: N organisations on one machine, one base model, adapters swapped per participant.

Order of a run: data -> model -> (run directory) -> base evaluation -> federated rounds -> isolated
baselines -> export -> report. Inputs are validated before the run directory exists, so a bad config
or data file leaves nothing behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from consortium.attacks import (
    HarmfulAttack,
    RoundView,
    harmful_sets,
)
from consortium.backend import open_backend, submit
from consortium.config import RunConfig, to_toml_dict
from consortium.data import EncodedExample, Example, build_corpus, encode_example
from consortium.defense import needs
from consortium.local.data import prepare_data
from consortium.local.params import lora_spec, shadow_params, train_params
from consortium.local.participant import heldout_loss_fn
from consortium.local.privacy import dp_share
from consortium.local.seeds import local_seed, simulated_noise_seed
from consortium.model import (
    attach,
    export_peft,
    get_flat,
    layout,
    load_base,
    set_flat,
)
from consortium.privacy import PrivacyBudgetExceeded
from consortium.privacy.tracker import resolve, tracker_for
from consortium.probe import check_fitted_for, check_layout, load_file, probe_rule, publish
from consortium.protocol import MemoryLedger, RoundRunner, TrainFn
from consortium.report import write_report
from consortium.round.pipeline import rule_from_config
from consortium.round.records import get_vector, put_vector
from consortium.rundir import RunDir
from consortium.sim_metrics import AdapterMetrics
from consortium.sim_participants import make_participants
from consortium.sim_report import central_detail, charge, empty_report, round_bytes
from consortium.store import BlobStore
from consortium.train import prepare_model, speed_settings

RoundPlay = Callable[[str, TrainFn], tuple[str, dict[str, Any]]]  # (global in, train) -> (global out, row)


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
        self.participants = make_participants(cfg, shards, self._encode)
        self.backdoors = sorted({a.backdoor for a in cfg.attacks if a.backdoor is not None})
        harmful = {(a.jsonl, a.test_fraction): a for a in cfg.attacks if isinstance(a, HarmfulAttack)}
        self.harmful = [
            (a.jsonl or "restricted", harmful_sets(a, cfg.seed, cfg.data.n_test)[1]) for a in harmful.values()
        ]
        self.metrics = AdapterMetrics(
            cfg, self.model, self.spec, self.tokenizer, self.test, self.backdoors, self.harmful
        )
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
        check_fitted_for(probe, pc, pc.artifact)
        return probe_rule(pc)

    def _encode(self, examples: list[Example]) -> list[EncodedExample]:
        c = self.cfg
        return [encode_example(self.tokenizer, e, c.train.max_len, c.data.system_prompt) for e in examples]

    def _root_set(self) -> list[Example]:
        """FLTrust's root set: a few clean built-in examples per domain, public with the config."""
        d = self.cfg.data
        return build_corpus(list(d.domains), d.root_per_domain, 1, self.cfg.seed + 7919).train

    @contextmanager
    def progress(self) -> Iterator[Progress]:
        cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*cols, console=self.console, transient=False) as p:
            yield p

    def evaluate(self, vec: torch.Tensor, label: str, progress: Progress) -> dict[str, float]:
        """Clean exact-match accuracy per domain of the adapter `vec`."""
        return self.metrics.accuracy(vec, label, progress)

    def backdoor_metrics(self, vec: torch.Tensor, label: str, progress: Progress) -> list[dict[str, Any]]:
        return self.metrics.backdoor(vec, label, progress)

    def harmful_metrics(self, vec: torch.Tensor, label: str, progress: Progress) -> list[dict[str, Any]]:
        return self.metrics.harmful_rates(vec, label, progress)

    def run(self, out_root: Path, plots: bool = True) -> Path:
        """Run everything and write the run directory; Ctrl-C leaves a consistent, marked directory."""
        rd = RunDir.create(out_root, self.cfg.name)
        self.path = rd.path
        rd.write_config(to_toml_dict(self.cfg))
        report = self._empty_report()
        rd.write_json("report.json", report)
        rd.log(f"run started in {rd.path}")
        try:
            with self.progress() as progress:
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
        speed = speed_settings(self.model, train_params(self.cfg, 1))
        return empty_report(
            self.cfg,
            self.requested_privacy,
            self.backend.describe(),
            self.participants,
            self.initial,
            self.layout,
            speed,
        )

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
            play = self.chain_play(chain, rd, report)
        else:
            runner = RoundRunner(MemoryLedger(), store, self.layout, rule, root=self._root_update)
            runner.evidence = lambda pid: self._evidence.pop(pid, None)

            def play(start: str, train: TrainFn) -> tuple[str, dict[str, Any]]:
                rec, cand = runner.run_round(start, [p.name for p in self.participants], train)
                return rec.global_out or start, central_detail(rec, cand)

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
            global_hash, previous = self.play_round(
                rd, report, progress, r, global_hash, previous, play, tracker
            )
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

    def chain_play(self, chain: Any, rd: RunDir, report: dict[str, Any]) -> RoundPlay:
        """A round through the contract (`chain_sim.ChainRoundRunner`), the report's chain section kept
        up to date with it."""

        def play(start: str, train: TrainFn) -> tuple[str, dict[str, Any]]:
            done = chain.run_round(start, train, self._loss_fn)
            report["chain"] = chain.summary(self.cfg, rd)
            return done.global_out, done.summary()

        return play

    def play_round(
        self,
        rd: RunDir,
        report: dict[str, Any],
        progress: Progress,
        r: int,
        global_hash: str,
        previous: torch.Tensor | None,
        play: RoundPlay,
        tracker: Any = None,
    ) -> tuple[str, torch.Tensor | None]:
        """Round `r` from `global_hash`: local training and the protocol's round (`play`), then the
        evaluation and the report's row, written. `previous`: the start of the last round that moved
        the model (its step is public: what an adaptive attacker sees). Returns both, updated."""
        timings = report["timings"]
        store = BlobStore(rd.store)
        part_task = progress.add_task(f"round {r + 1}: local training", total=len(self.participants))
        round_start = get_vector(store, global_hash, self.layout)
        last_step = None if previous is None else round_start - previous  # public: the last global change
        train = self.train_fn(r, last_step, report, lambda t=part_task: progress.advance(t))
        t1 = time.perf_counter()
        global_out, detail = play(global_hash, train)
        timings["federated_train"] = timings.get("federated_train", 0.0) + time.perf_counter() - t1
        progress.remove_task(part_task)
        previous = round_start if global_out != global_hash else previous
        global_hash = global_out
        t1 = time.perf_counter()
        vec = get_vector(store, global_hash, self.layout)
        acc = self.evaluate(vec, f"round {r + 1}", progress)
        backdoor = self.backdoor_metrics(vec, f"round {r + 1}", progress) if self.backdoors else []
        harmful = self.harmful_metrics(vec, f"round {r + 1}", progress) if self.harmful else []
        timings["federated_eval"] = timings.get("federated_eval", 0.0) + time.perf_counter() - t1
        if tracker is not None:
            detail["privacy"] = charge(tracker, detail)
            report["privacy"]["epsilon"] = detail["privacy"]["epsilon"]
        wire = round_bytes(report["bytes"], len(detail.get("commitments", [])))
        report["rounds_detail"].append(
            {"round": r, **detail, "bytes": wire, "accuracy": acc, "backdoor": backdoor}
        )
        if harmful:
            report["rounds_detail"][-1]["harmful"] = report["harmful"]["federated"] = harmful
        if backdoor:
            report["backdoor"]["federated"] = backdoor
        report["rounds_completed"] = len(report["rounds_detail"])
        report["accuracy"]["federated"] = acc
        report["global_adapter"] = global_hash
        rd.write_json("report.json", report)
        outcome = f" ({detail['outcome']})" if "outcome" in detail else ""
        eps = "" if tracker is None else f" ε {detail['privacy']['epsilon']}"
        rd.log(f"round {r + 1}{outcome}: global {global_hash[:12]} mean accuracy {acc['mean']:.3f}{eps}")
        return global_hash, previous

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
