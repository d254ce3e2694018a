"""The cell registry: what every cell module declares, and how the generic machinery finds it.

A cell module (``rnn.py``, ``gru.py``, ``lstm.py``, ``jordan.py``, ``indrnn.py``, ...) holds
everything specific to one recurrent cell and registers one :class:`Cell` description. The
generic parts (``functional``'s drivers, the layer wrapper, Bidirectional and stacking, the
streaming engine, the ONNX exporter, the conformance tests) read that description instead of
``if cell == ...`` chains. See docs/ARCHITECTURE.md for a walk through adding a cell.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

__all__ = ["Cell", "register", "get", "registered", "load_all"]


@dataclass(frozen=True)
class Cell:
    """Description of one recurrent cell type.

    Attributes
    ----------
    name : str
        Lower-case identifier, the layers' ``cell`` attribute (``"lstm"``).
    gates : int
        Rows of the input projection per unit: ``W`` is (D, gates*H, I).
    state_names : tuple of str
        The states carried between steps, in the order of the functional API's initial and
        final states (``("h",)``, ``("h", "c")``, ``("y",)``).
    default_activations : tuple of str
        ONNX activation names, one direction's worth.
    onnx_op : str or None
        The native ONNX node (``"RNN"``, ``"GRU"``, ``"LSTM"``) the layer exports to, after
        ``layer.onnx_weights()`` has put its weights into that node's layout; None: the
        exporter wraps the module's ``onnx_step`` in a ``Scan`` (full sequence) or uses it as it
        is (streaming graph).
    stream_op : int
        Op code of the module's streaming step (``streaming._model_step`` dispatches on it).
    module : str
        The cell module, for the generic code that needs its functions.
    functional : tuple of str
        Names of the public functions the module adds to ``edgernn.functional``.
    layers : tuple of str
        Names of the layer classes the module adds to ``edgernn.layers``.
    """

    name: str
    gates: int
    state_names: tuple
    default_activations: tuple
    onnx_op: str | None
    stream_op: int
    module: str
    functional: tuple = field(default_factory=tuple)
    layers: tuple = field(default_factory=tuple)

    @property
    def num_states(self) -> int:
        return len(self.state_names)

    def mod(self):
        """The cell's module."""
        return importlib.import_module(self.module)


_CELLS: dict[str, Cell] = {}

# Registration: one line per cell module (one per line, so that cells added in parallel merge). Imported lazily (``load_all``) because the newer
# cells' modules define their layer classes and so import ``edgernn.layers``.
MODULES = (
    "rnn",
    "gru",
    "lstm",
    "jordan",
    "indrnn",
    "sru",
    "fastrnn",
    "fastgrnn",
    "qrnn",
    "janet",
)


def register(cell: Cell) -> Cell:
    """Add ``cell`` to the registry (called once at the bottom of each cell module)."""
    if cell.name in _CELLS and _CELLS[cell.name].module != cell.module:
        raise ValueError(f"cell {cell.name!r} is registered twice ({_CELLS[cell.name].module}, {cell.module})")
    _CELLS[cell.name] = cell
    return cell


_loaded = False


def load_all() -> None:
    """Import every cell module listed in ``MODULES`` (registers them)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for m in MODULES:
        importlib.import_module(f"edgernn.cells.{m}")


def get(name: str) -> Cell:
    """The registered cell called ``name``; ValueError naming the known ones otherwise."""
    if name not in _CELLS:
        load_all()
    try:
        return _CELLS[name]
    except KeyError:
        raise ValueError(f"unknown cell {name!r}; registered: {sorted(_CELLS)}") from None


def registered() -> dict[str, Cell]:
    """All registered cells, by name (every module in ``MODULES`` is imported first)."""
    load_all()
    return dict(_CELLS)
