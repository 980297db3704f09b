"""nprnn.training.presets: every named configuration is valid, and overrides apply."""

import pytest

from nprnn.models.lm import LMConfig
from nprnn.training.lm import TrainConfig
from nprnn.training.loop import OPTIMIZERS
from nprnn.training.presets import OPTIMIZER_NAMES, PRESETS, SCHEDULES, preset_model, split_preset


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_a_valid_configuration(name):
    model, train, level = split_preset(name)
    LMConfig(vocab_size=50, **model).validate()
    config = TrainConfig(**train).validate()
    assert level in ("word", "char") and config.max_grad > 0 and config.schedule in SCHEDULES
    assert preset_model(name) == (model, level)


def test_the_textbook_schedules_in_the_new_meaning_of_decay():
    assert split_preset("better-rnnlm")[1]["decay"] == 0.25  # the book's lr / 4 on plateau
    assert split_preset("tiny")[1]["decay"] == 0.5
    assert split_preset("zaremba-small")[1]["decay"] == 0.5 and split_preset("zaremba-small")[1]["decay_start"] == 4


def test_overrides_apply_and_none_is_ignored():
    model, train, _ = split_preset("rnnlm", {"hidden": 64, "lr": 1.0, "epochs": None})
    assert model["hidden"] == 64 and train["lr"] == 1.0 and train["epochs"] == 4
    with pytest.raises(ValueError, match="unknown preset 'tinny'"):
        split_preset("tinny")
    with pytest.raises(ValueError, match="unknown settings: colour"):
        split_preset("tiny", {"colour": 1})


def test_the_parser_names_are_the_loops():
    assert tuple(OPTIMIZERS) == OPTIMIZER_NAMES
