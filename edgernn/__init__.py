"""edgernn: Numba-accelerated RNN, LSTM and GRU for small CPUs, with ONNX export.

Importing edgernn needs only numpy, numba and SciPy; ``edgernn.onnx`` needs onnx and
onnxruntime, and plotting in examples needs matplotlib.
"""

from . import callbacks, cells, functional, initializers, layers, losses, metrics, optimizers
from ._config import get_num_threads, set_num_threads
from .callbacks import TrainingDiverged
from .graph import Model
from .layers.core import Input
from .models import Sequential
from .saving import ModelFileError, load_model

__version__ = "0.1.0"

# The newer cells register when first used (``cells.registered``, ``layers.<Name>``,
# ``functional.<name>``, loading a file that names them): importing their modules costs ~60 ms.

__all__ = ["cells", "functional", "set_num_threads", "get_num_threads", "__version__", "Sequential", "Model", "Input", "load_model",
           "TrainingDiverged", "ModelFileError", "layers", "losses", "metrics", "optimizers", "callbacks", "initializers"]
