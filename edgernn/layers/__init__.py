"""Keras-style layers: ``Dense``, ``Dropout``, ``Activation``, ``Embedding``, ``Masking``,
``SimpleRNN``, ``GRU``, ``LSTM``, ``Bidirectional`` (and ``Input`` for declaring shapes)."""

from .core import ACTIVATIONS, Activation, Dense, Dropout, Embedding, Input, InputLayer, Layer, Masking
from .recurrent import GRU, LSTM, Bidirectional, RecurrentLayer, SimpleRNN

__all__ = ["Layer", "Input", "InputLayer", "Dense", "Dropout", "Activation", "Embedding", "Masking",
           "RecurrentLayer", "SimpleRNN", "GRU", "LSTM", "Bidirectional", "ACTIVATIONS", "get"]

_REGISTRY = {c.__name__: c for c in (Dense, Dropout, Activation, Embedding, Masking, SimpleRNN, GRU, LSTM,
                                     Bidirectional)}


def get(class_name):
    """Layer class by name (used when loading a saved model)."""
    try:
        return _REGISTRY[class_name]
    except KeyError:
        raise ValueError(f"unknown layer class {class_name!r}; known: {sorted(_REGISTRY)}") from None


def register(cls):
    """Make a custom ``Layer`` subclass loadable by ``load_model`` (usable as a decorator)."""
    _REGISTRY[cls.__name__] = cls
    return cls
