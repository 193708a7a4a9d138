"""Contribution removal: the global model as if some participants had never taken part, checkable
by anyone (`consortium remove`, `consortium audit` on its directory; docs/removal.md)."""

from consortium.removal.remove import remove
from consortium.removal.source import METHODS, RemovalInputError
from consortium.removal.verify import audit_removal, is_removal

__all__ = ["METHODS", "RemovalInputError", "audit_removal", "is_removal", "remove"]
