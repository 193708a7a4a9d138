"""Finiteness of the updates, proven by the rules' own passes instead of a pass of its own.

`aggregate` refuses an update that holds NaN or Inf, naming the first such client. Checking that takes a
pass over every update; most rules already make one in float64, whose result a NaN or Inf entry cannot
leave finite (it propagates; products of finite float32 values cannot overflow in float64). So `aggregate`
hands the rule a `FiniteCheck`; a kernel reports which rows its pass summed and whether the result was
finite (`cover`). A result that is not finite (bad input, or finite float64 values that overflow) sends
every row through the entry-by-entry check, which names the first bad client as before; rows that no
pass summed are checked on their own at the end (`finish`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from consortium.defense.chunks import col_chunks
from consortium.defense.params import UpdateError


def finite_rows(x: torch.Tensor, chunk_elems: int) -> torch.Tensor:
    """Per row: all entries finite? On the CPU. Fast path: a row's sum is finite only if every entry is
    (NaN and Inf propagate); rows whose sum is not finite (also when finite values overflow) are checked
    entry by entry. Chunked over columns, no [n, d] temporary."""
    n, d = x.shape
    sums = torch.zeros(n, dtype=x.dtype, device=x.device)
    for cols in col_chunks(n, d, chunk_elems):
        sums += x[:, cols].sum(1)
    suspect = torch.nonzero(~torch.isfinite(sums)).flatten().tolist()
    ok = torch.ones(n, dtype=torch.bool)
    for i in suspect:
        ok[i] = bool(torch.isfinite(x[i]).all())
    return ok


class FiniteCheck:
    """The finiteness of the rows of `x`, settled by the rule's kernels (`cover`) and `finish`."""

    def __init__(self, x: torch.Tensor, names: Sequence[str], chunk_elems: int) -> None:
        self.x = x
        self.names = tuple(names)
        self.chunk_elems = chunk_elems
        self.covered = torch.zeros(x.shape[0], dtype=torch.bool)
        self.checked = False

    def cover(self, rows: torch.Tensor | None, finite: bool) -> None:
        """A pass summed `rows` (indices; None = all) into a float64 result, finite or not. Raises
        UpdateError naming the first bad client if it was not and some row is bad."""
        if not finite:
            self.refuse_bad_rows()
        if rows is None:
            self.covered[:] = True
        else:
            self.covered[rows.cpu()] = True

    def refuse_bad_rows(self) -> None:
        """Check every row entry by entry (once); UpdateError naming the first bad client, if any."""
        if self.checked:
            return
        ok = finite_rows(self.x, self.chunk_elems)
        self.checked = True
        if not bool(ok.all()):
            bad = int(torch.nonzero(~ok)[0])
            raise UpdateError(f"update from {self.names[bad]!r}: contains NaN or Inf")

    def finish(self) -> None:
        """Check the rows no pass covered, each on its own."""
        if self.checked:
            return
        for i in torch.nonzero(~self.covered).flatten().tolist():
            if not bool(torch.isfinite(self.x[i]).all()):
                self.refuse_bad_rows()  # names the first bad row, wherever it is
        self.checked = True


def all_finite(t: torch.Tensor) -> bool:
    """Whether every entry of a (small) result is finite."""
    return bool(torch.isfinite(t).all())
