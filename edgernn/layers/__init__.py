"""Keras-style layers: ``Dense``, ``Dropout``, ``Activation``, ``Embedding``, ``Masking``,
``SimpleRNN``, ``GRU``, ``LSTM``, ``Bidirectional`` (and ``Input`` for declaring shapes), the
layers around them (``Conv1D``, ``LayerNormalization``, ``TimeDistributed``, ``RepeatVector``,
``Flatten``, ``Reshape``, global pooling, and the merge layers ``Concatenate``, ``Add``, ...), the
attention layers ``Attention``, ``AdditiveAttention``, ``AttentionPooling1D``, and the layers of the
newer cells, defined in their cell modules (``JordanRNN``, ``IndRNN``, ...)."""

from .attention import AdditiveAttention, Attention, AttentionPooling1D
from .conv import Conv1D, Convolution1D
from .core import ACTIVATIONS, Activation, Dense, Dropout, Embedding, Input, InputLayer, Layer, Masking
from .merge import Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract
from .normalization import LayerNormalization
from .pooling import GlobalAveragePooling1D, GlobalAvgPool1D, GlobalMaxPool1D, GlobalMaxPooling1D
from .recurrent import GRU, LSTM, Bidirectional, RecurrentLayer, SimpleRNN
from .reshaping import Flatten, RepeatVector, Reshape, TimeDistributed

__all__ = ["Layer", "Input", "InputLayer", "Dense", "Dropout", "Activation", "Embedding", "Masking",
           "RecurrentLayer", "SimpleRNN", "GRU", "LSTM", "Bidirectional", "ACTIVATIONS", "get",
           "Conv1D", "Convolution1D", "LayerNormalization", "TimeDistributed", "RepeatVector", "Flatten",
           "Reshape", "GlobalAveragePooling1D", "GlobalMaxPooling1D", "GlobalAvgPool1D", "GlobalMaxPool1D",
           "Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
           "Attention", "AdditiveAttention", "AttentionPooling1D"]

_REGISTRY = {c.__name__: c for c in (Dense, Dropout, Activation, Embedding, Masking, SimpleRNN, GRU, LSTM,
                                     Bidirectional, Conv1D, LayerNormalization, TimeDistributed, RepeatVector,
                                     Flatten, Reshape, GlobalAveragePooling1D, GlobalMaxPooling1D, Concatenate,
                                     Add, Subtract, Multiply, Average, Maximum, Minimum, Attention,
                                     AdditiveAttention, AttentionPooling1D)}


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
