"""Keras-style layers: ``Dense``, ``Dropout``, ``Activation``, ``Embedding``, ``Masking``,
``SimpleRNN``, ``GRU``, ``LSTM``, ``Bidirectional`` (and ``Input`` for declaring shapes), the attention
layers ``Attention``, ``AdditiveAttention``, ``AttentionPooling1D``, and the layers of the newer cells,
defined in their cell modules (``JordanRNN``, ``IndRNN``, ...)."""

from .attention import AdditiveAttention, Attention, AttentionPooling1D
from .core import ACTIVATIONS, Activation, Dense, Dropout, Embedding, Input, InputLayer, Layer, Masking
from .recurrent import GRU, LSTM, Bidirectional, RecurrentLayer, SimpleRNN

__all__ = ["Layer", "Input", "InputLayer", "Dense", "Dropout", "Activation", "Embedding", "Masking",
           "RecurrentLayer", "SimpleRNN", "GRU", "LSTM", "Bidirectional",
           "Attention", "AdditiveAttention", "AttentionPooling1D", "ACTIVATIONS", "get"]

_REGISTRY = {c.__name__: c for c in (Dense, Dropout, Activation, Embedding, Masking, SimpleRNN, GRU, LSTM,
                                     Bidirectional, Attention, AdditiveAttention, AttentionPooling1D)}


def get(class_name):
    """Layer class by name (used when loading a saved model)."""
    if class_name not in _REGISTRY:
        from .. import cells

        cells.load_all()  # the newer cells' modules register their layers
    try:
        return _REGISTRY[class_name]
    except KeyError:
        raise ValueError(f"unknown layer class {class_name!r}; known: {sorted(_REGISTRY)}") from None


def register(cls):
    """Make a custom ``Layer`` subclass loadable by ``load_model`` (usable as a decorator)."""
    _REGISTRY[cls.__name__] = cls
    return cls


def __getattr__(name):
    """Layers defined in cell modules (``edgernn/cells/``), e.g. ``IndRNN``, ``JordanRNN``."""
    from .. import cells

    for spec in cells.registered().values():
        if name in spec.layers:
            return getattr(spec.mod(), name)
    raise AttributeError(f"module 'edgernn.layers' has no attribute {name!r}")
