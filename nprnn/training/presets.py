"""Named configurations, and the names of the optimizers and schedules: plain data, so that building
the command line's parser imports no training code."""

OPTIMIZER_NAMES = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
SCHEDULES = ("none", "plateau", "step", "cosine")

# Model and training settings of the language-model presets. "tiny" is what `nprnn train` runs with no
# arguments: a character-level LSTM that learns visibly within about two minutes on two cores.
# decay multiplies the lr (plateau: when the validation perplexity did not improve; step: every epoch
# from decay_start), so the textbook's divide-by-4 is 0.25.
PRESETS = {
    "tiny": dict(
        level="char", cell="lstm", embed=32, hidden=256, layers=1, dropout=0.0, tie_weights=False,
        optimizer="adam", lr=0.004, max_grad=1.0, schedule="plateau", decay=0.5,
        epochs=8, batch_size=32, bptt=64, eval_batch_size=32, eval_bptt=64,
    ),
    # the textbook's ch06 train_rnnlm.py: Rnnlm (LSTM 100/100), SGD lr 20, clip 0.25, 4 epochs
    "rnnlm": dict(
        level="word", cell="lstm", embed=100, hidden=100, layers=1, dropout=0.0, tie_weights=False,
        optimizer="sgd", lr=20.0, max_grad=0.25, schedule="none", epochs=4, batch_size=20, bptt=35, continuous=True,
    ),
    # the textbook's ch06 train_better_rnnlm.py: 2 x LSTM 650, dropout 0.5, tied, lr / 4 on plateau
    "better-rnnlm": dict(
        level="word", cell="lstm", embed=650, hidden=650, layers=2, dropout=0.5, tie_weights=True,
        optimizer="sgd", lr=20.0, max_grad=0.25, schedule="plateau", decay=0.25, epochs=40, batch_size=20, bptt=35,
    ),
    # Zaremba, Sutskever & Vinyals 2014, "Recurrent neural network regularization". Their loss is summed
    # over the T time steps (averaged over the batch); ours is the mean over all N*T positions, whose
    # gradient is T times smaller. So their lr 1 is lr T here and their clipping norm c is c / T.
    "zaremba-small": dict(
        level="word", cell="lstm", embed=200, hidden=200, layers=2, dropout=0.0, tie_weights=False,
        init="uniform", init_scale=0.1, optimizer="sgd", lr=20.0, max_grad=5.0 / 20,
        schedule="step", decay=0.5, decay_start=4, epochs=13, batch_size=20, bptt=20,
    ),
    "zaremba-medium": dict(
        level="word", cell="lstm", embed=650, hidden=650, layers=2, dropout=0.5, tie_weights=False,
        init="uniform", init_scale=0.05, optimizer="sgd", lr=35.0, max_grad=5.0 / 35,
        schedule="step", decay=0.8, decay_start=6, epochs=39, batch_size=20, bptt=35,
    ),
    "zaremba-large": dict(
        level="word", cell="lstm", embed=1500, hidden=1500, layers=2, dropout=0.65, tie_weights=False,
        init="uniform", init_scale=0.04, optimizer="sgd", lr=35.0, max_grad=10.0 / 35,
        schedule="step", decay=1 / 1.15, decay_start=14, epochs=55, batch_size=20, bptt=35,
    ),
}  # fmt: skip

# The seq2seq defaults are the textbook's (ch07/train_seq2seq.py, ch08/train.py).
SEQ2SEQ_DEFAULTS = dict(
    model="attention", embed=16, hidden=128, epochs=10, batch_size=128, optimizer="adam", lr=0.001, max_grad=5.0,
    schedule="none",
)  # fmt: skip
SEQ2SEQ_MODELS = ("seq2seq", "peeky", "attention")
SPLIT_SEED = 1984  # the textbook's train/test shuffle seed


def split_preset(name, overrides=None):
    """``(model settings, training settings, level)`` of a language-model preset, with ``overrides``
    (None values ignored) applied."""
    from dataclasses import fields

    from nprnn.models.lm import LMConfig
    from nprnn.training.lm import TrainConfig

    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    settings = {**PRESETS[name], **{k: v for k, v in (overrides or {}).items() if v is not None}}
    model_keys = {f.name for f in fields(LMConfig)} - {"vocab_size"}
    train_keys = {f.name for f in fields(TrainConfig)}
    unknown = set(settings) - model_keys - train_keys - {"level"}
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
    model = {k: v for k, v in settings.items() if k in model_keys}
    train = {k: v for k, v in settings.items() if k in train_keys}
    return model, train, settings.get("level", "word")


def preset_model(name):
    """``(model settings, level)`` of a language-model preset: what ``LMConfig`` takes (no training code)."""
    from dataclasses import fields

    from nprnn.models.lm import LMConfig

    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    keys = {f.name for f in fields(LMConfig)} - {"vocab_size"}
    return {k: v for k, v in PRESETS[name].items() if k in keys}, PRESETS[name].get("level", "word")
