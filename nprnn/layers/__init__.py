"""Layers, one file per family. Every layer follows the textbook protocol:
``params`` / ``grads`` are lists of arrays (``params`` are the arrays passed in,
``backward`` writes ``grads`` in place), ``forward`` / ``backward``."""

from nprnn.layers.rnn import RNN, TimeRNN, init_rnn_params

__all__ = ["RNN", "TimeRNN", "init_rnn_params"]
