"""Recurrent cells, one module each, found by the generic machinery through a registry.

See :mod:`edgernn.cells.base` and docs/ARCHITECTURE.md.
"""

from .base import MODULES, Cell, get, load_all, register, registered

__all__ = ["Cell", "MODULES", "get", "load_all", "register", "registered"]
