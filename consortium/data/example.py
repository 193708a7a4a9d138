"""The unit of data every other module passes around: one prompt, its exact reference answer, its domain."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """One supervised example. Frozen so shards can be shared between participants without copies."""

    prompt: str
    response: str
    domain: str
