"""`consortium dashboard --audit`: run the audit on the run directory once the run is complete, in a
background thread, and keep the verdict in memory for the page (the dashboard writes nothing)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from consortium.audit import AuditInputError, audit_run
from consortium.removal.verify import audit_removal, is_removal


class AuditOnce:
    """One audit of `root`, started the first time the run is seen complete."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self.view: dict[str, Any] = {
            "source": "dashboard --audit",
            "state": "waiting for the run to complete",
        }

    @property
    def tag(self) -> str:
        """Changes when the verdict does (part of the page's version)."""
        return str(self.view["state"])

    def poll(self, status: str | None) -> dict[str, Any]:
        with self._lock:
            if status == "complete" and self.view["state"].startswith("waiting"):
                if not (self.root / "store").is_dir():  # BlobStore would create it: never write here
                    self.view = self.view | {"state": "error", "error": "no store/ in the run directory"}
                else:
                    self.view = self.view | {"state": "running"}
                    threading.Thread(target=self._run, name="dashboard-audit", daemon=True).start()
            return dict(self.view)

    def _run(self) -> None:
        t0 = time.perf_counter()
        try:
            rep = audit_removal(self.root) if is_removal(self.root) else audit_run(self.root)
            view = {"state": "done", "ok": rep.ok, "problems": rep.problems, "checked": rep.checked}
        except AuditInputError as e:
            view = {"state": "error", "error": str(e)}
        except Exception as e:  # shown on the page, never a dead thread
            view = {"state": "error", "error": f"{type(e).__name__}: {e}"}
        view["seconds"] = round(time.perf_counter() - t0, 1)
        with self._lock:
            self.view = {"source": "dashboard --audit"} | view
