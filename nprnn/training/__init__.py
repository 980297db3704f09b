"""Training: one loop for every model (``loop``), what the language models and the seq2seq models add
to it (``lm``, ``seq2seq``), the named configurations (``presets``), data parallelism over MPI
(``distributed``).

Import the modules themselves (``from nprnn.training.lm import LMTrainer``); this package imports
nothing, so reading a model or building the command line loads no training code.
"""
