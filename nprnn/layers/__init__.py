"""Layers, one file per family. Every layer follows the textbook protocol:
``params`` / ``grads`` are lists of arrays (``params`` are the arrays passed in,
``backward`` writes ``grads`` in place), ``forward`` / ``backward``."""

from nprnn.layers.basic import IdOutOfRangeError, TimeAffine, TimeDropout, TimeEmbedding, TimeSoftmaxWithLoss
from nprnn.layers.gru import GRU, TimeGRU, init_gru_params
from nprnn.layers.lstm import LSTM, TimeLSTM, init_lstm_params
from nprnn.layers.rnn import RNN, TimeRNN, init_rnn_params
from nprnn.layers.stack import Bidirectional, TimeStack, make_recurrent

__all__ = [
    "RNN", "TimeRNN", "init_rnn_params",
    "LSTM", "TimeLSTM", "init_lstm_params",
    "GRU", "TimeGRU", "init_gru_params",
    "TimeEmbedding", "TimeAffine", "TimeSoftmaxWithLoss", "TimeDropout", "IdOutOfRangeError",
    "Bidirectional", "TimeStack", "make_recurrent",
]  # fmt: skip
