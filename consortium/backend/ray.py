"""The Ray backend: participants' local training in Ray actors; protocol, store and ledger in the driver.

Each actor loads the base model once and attaches the run's adapter (same model name, dtype, seed and
LoRA spec as the driver, hence the same weights), then trains any participant from a given start vector:
it is a remote `LocalTrainer`, stateless between calls. The driver `submit`s a round's honest trainings at
once, then the protocol commits participant after participant in its own order and `train` hands it the
matching result, so every record is the one the in-process run writes. Anything not submitted ahead
(an attacker's fits, the FLTrust root update) runs remotely on demand.

Bit-identity needs the same torch thread count on both sides (CPU reductions are split by thread):
`ray.threads` defaults to the driver's count. Imported only when `backend = "ray"`.
"""

from __future__ import annotations

import itertools
import os
import resource
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import ray
import torch

from consortium.backend.local import BackendError
from consortium.model import attach, load_base
from consortium.train import LocalResult, LocalTrainer, TrainParams

if TYPE_CHECKING:
    from peft import PeftModel

    from consortium.config import RaySection, RunConfig
    from consortium.data import EncodedExample
    from consortium.model import LoraSpec


class _Worker:
    """One actor: the base model with the run's adapter, loaded once, training whoever it is asked to."""

    def __init__(self, model_name: str, dtype: str, seed: int, spec: LoraSpec, threads: int) -> None:
        torch.set_num_threads(threads)
        base, tok = load_base(model_name, dtype=getattr(torch, dtype), seed=seed)
        model = attach(base, spec)
        if ray.get_gpu_ids() and torch.cuda.is_available():
            model.to("cuda")
        self.trainer = LocalTrainer(model, spec, tok.pad_token_id)

    def train(
        self,
        start: torch.Tensor,
        examples: Sequence[EncodedExample],
        params: TrainParams,
        seed: int,
        snapshot_every: int,
    ) -> LocalResult:
        return self.trainer.train(start, examples, params, seed, snapshot_every)

    def info(self) -> dict[str, Any]:
        """Process id, torch threads, device and peak resident memory (bytes) of this actor."""
        return {
            "pid": os.getpid(),
            "threads": torch.get_num_threads(),
            "device": str(self.trainer.device),
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }


def _check_reachable(address: str, timeout: float) -> None:
    """Fail in `timeout` seconds with the address in the message, instead of Ray's long retry loop."""
    if address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or port is None:
        raise BackendError(f"ray.address {address!r}: expected 'host:port', 'ray://host:port' or 'auto'")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise BackendError(
            f"ray.address {address!r}: cannot reach {host}:{port} ({e.strerror or e}); start the cluster "
            "(`ray start --head`) or leave ray.address unset to start a local one"
        ) from None


class RayBackend:
    """A joined (or started) Ray cluster and the run's actor settings."""

    def __init__(self, cfg: RunConfig, started: bool) -> None:
        self.cfg, self.rc, self.started = cfg, cfg.ray, started
        self.threads = self.rc.threads or torch.get_num_threads()
        cpus = float(ray.cluster_resources().get("CPU", 0))
        gpus = float(ray.cluster_resources().get("GPU", 0))
        self.workers = self.rc.workers or max(1, int(cpus // self.rc.cpus_per_worker))
        if self.workers * self.rc.cpus_per_worker > cpus:
            self.close()
            raise BackendError(
                f"ray.workers: {self.workers} actors x {self.rc.cpus_per_worker} CPU need "
                f"{self.workers * self.rc.cpus_per_worker:g} CPUs, the cluster has {cpus:g}"
            )
        self.gpus = self.rc.gpus_per_worker
        if self.gpus is None:
            self.gpus = min(1.0, gpus / self.workers) if gpus else 0.0
        self.actors: list[Any] = []
        self.final_info: list[dict[str, Any]] = []

    @classmethod
    def connect(cls, cfg: RunConfig) -> RayBackend:
        """Join `ray.address`, reuse a Ray already initialised in this process, or start a local cluster."""
        rc: RaySection = cfg.ray
        if ray.is_initialized():
            return cls(cfg, started=False)
        if rc.address is not None:
            _check_reachable(rc.address, rc.connect_timeout)
        try:
            ray.init(
                address=rc.address,
                include_dashboard=False,
                logging_level="WARNING",
                configure_logging=True,
                log_to_driver=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise BackendError(f"ray.address {rc.address!r}: cannot join the Ray cluster: {e}") from None
        return cls(cfg, started=True)

    def trainer(self, model: PeftModel, spec: LoraSpec, pad_id: int) -> RayTrainer:
        """Start the actors (each loads the model once); `model` and `pad_id` stay with the driver."""
        cfg = self.cfg
        actor = ray.remote(_Worker).options(num_cpus=self.rc.cpus_per_worker, num_gpus=self.gpus)
        self.actors = [
            actor.remote(cfg.model.name, cfg.model.dtype, cfg.seed, spec, self.threads)
            for _ in range(self.workers)
        ]
        return RayTrainer(self.actors)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "ray",
            "ray_version": ray.__version__,
            "address": self.rc.address,
            "workers": self.workers,
            "cpus_per_worker": self.rc.cpus_per_worker,
            "gpus_per_worker": self.gpus,
            "threads": self.threads,
        }

    def worker_info(self) -> list[dict[str, Any]]:
        return ray.get([a.info.remote() for a in self.actors])

    def close(self) -> None:
        """Stop the actors (their last `info` kept in `final_info`); shut Ray down only if we started it."""
        if self.actors:
            self.final_info = self.worker_info()
        for a in self.actors:
            ray.kill(a)
        self.actors = []
        if self.started and ray.is_initialized():
            ray.shutdown()


class RayTrainer:
    """Driver-side proxy with `LocalTrainer.train`'s signature; `submit` starts a training ahead of time.

    A submitted training is matched to the later `train` call by (examples object, params, seed,
    snapshot_every) and an equal start vector; anything unmatched is trained on demand.
    """

    def __init__(self, actors: Sequence[Any]) -> None:
        self._actors = itertools.cycle(actors)
        self._pending: dict[tuple[Any, ...], tuple[torch.Tensor, Sequence[EncodedExample], Any]] = {}
        self._start: tuple[torch.Tensor, Any] | None = None  # the last start vector put in the object store

    def _start_ref(self, start: torch.Tensor) -> Any:
        if self._start is None or self._start[0] is not start:
            self._start = (start, ray.put(start))
        return self._start[1]

    def submit(
        self,
        start: torch.Tensor,
        examples: Sequence[EncodedExample],
        params: TrainParams,
        seed: int,
        snapshot_every: int = 0,
    ) -> None:
        key = (id(examples), params, seed, snapshot_every)
        future = next(self._actors).train.remote(
            self._start_ref(start), list(examples), params, seed, snapshot_every
        )
        self._pending[key] = (start, examples, future)  # holding `examples` keeps its id valid

    def train(
        self,
        start: torch.Tensor,
        examples: Sequence[EncodedExample],
        params: TrainParams,
        seed: int,
        snapshot_every: int = 0,
    ) -> LocalResult:
        key = (id(examples), params, seed, snapshot_every)
        ahead = self._pending.pop(key, None)
        if ahead is None or ahead[1] is not examples or not torch.equal(ahead[0], start):
            self.submit(start, examples, params, seed, snapshot_every)
            ahead = self._pending.pop(key)
        return ray.get(ahead[2])
