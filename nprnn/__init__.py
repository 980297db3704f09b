"""nprnn: recurrent neural networks in NumPy, with hand-written backpropagation through time."""

from nprnn.layers import (
    GRU,
    LSTM,
    RNN,
    Bidirectional,
    TimeAffine,
    TimeDropout,
    TimeEmbedding,
    TimeGRU,
    TimeLSTM,
    TimeRNN,
    TimeSoftmaxWithLoss,
    TimeStack,
    make_recurrent,
)

__version__ = "0.1.0"

__all__ = [
    "RNN", "TimeRNN", "LSTM", "TimeLSTM", "GRU", "TimeGRU",
    "TimeEmbedding", "TimeAffine", "TimeSoftmaxWithLoss", "TimeDropout",
    "Bidirectional", "TimeStack", "make_recurrent", "__version__",
]  # fmt: skip
