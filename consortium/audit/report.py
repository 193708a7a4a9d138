"""What an audit found: counts of what was checked and one line per mismatch."""

from __future__ import annotations

from dataclasses import dataclass, field


class AuditInputError(ValueError):
    """The audit cannot start: a missing or malformed run directory, config or chain record."""


@dataclass
class AuditReport:
    """What was checked (counts) and every mismatch found (empty: the run verifies)."""

    checked: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def count(self, what: str, n: int = 1) -> None:
        self.checked[what] = self.checked.get(what, 0) + n
