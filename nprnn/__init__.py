"""nprnn: recurrent neural networks in NumPy, with hand-written backpropagation through time."""

from nprnn.layers.rnn import RNN, TimeRNN

__version__ = "0.1.0"

__all__ = ["RNN", "TimeRNN", "__version__"]
