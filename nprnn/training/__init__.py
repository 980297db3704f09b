"""Training: one loop for every model (``loop``), what the language models and the seq2seq models add
to it (``lm``, ``seq2seq``), the named configurations (``presets``), data parallelism over MPI
(``distributed``).

``from nprnn.training import LMTrainer, TrainConfig, Seq2seqTrainer, Seq2seqConfig`` works; the
modules are imported on first use, so building the command line or reading a model loads no
training code.
"""

_EXPORTS = {
    "LMTrainer": "lm", "TrainConfig": "lm",
    "Seq2seqTrainer": "seq2seq", "Seq2seqConfig": "seq2seq",
    "TrainingLoop": "loop", "NumericError": "loop", "RunExistsError": "loop", "RunLockedError": "loop",
    "PRESETS": "presets", "split_preset": "presets",
}  # fmt: skip
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"nprnn.training.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'nprnn.training' has no attribute {name!r}")
