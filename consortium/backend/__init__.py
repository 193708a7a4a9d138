"""Where participants' local training runs: in this process (default) or on Ray actors (`backend = "ray"`).

The simulation asks its backend for a trainer with `LocalTrainer.train`'s signature. In process that is
`LocalTrainer` itself (`local`); under Ray it is a driver-side proxy (`ray`) that can also `submit`
trainings ahead of time so a round's participants train in parallel while the protocol still commits
them one by one, in its own order. Ray is imported only when it is selected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from consortium.backend.local import Backend, BackendError, InProcess, Trainer, submit

if TYPE_CHECKING:
    from consortium.config import RunConfig

__all__ = ["Backend", "BackendError", "InProcess", "Trainer", "open_backend", "submit"]


def open_backend(cfg: RunConfig) -> Backend:
    """The config's backend, connected (a Ray cluster is joined or started here, before any model loads,
    so a wrong `ray.address` fails in seconds). Raises BackendError."""
    if cfg.backend == "inprocess":
        return InProcess()
    try:
        from consortium.backend.ray import RayBackend  # Ray is optional: only when selected
    except ImportError as e:
        raise BackendError(
            f"backend 'ray': the ray package is not installed ({e}); pip install 'consortium[ray]'"
        ) from None
    return RayBackend.connect(cfg)
