"""Models built from the layers, and their file format: language models (``lm``), encoder-decoder
models (``seq2seq``) with their decoding (``decode``), and save/load for every kind (``io``)."""

from nprnn.models.io import load_lm, load_model, load_seq2seq, save_lm, save_seq2seq
from nprnn.models.lm import LanguageModel, LMConfig, evaluate, generate
from nprnn.models.seq2seq import MODELS, AttentionSeq2seq, PeekySeq2seq, Seq2seq, build_model

__all__ = [
    "LanguageModel", "LMConfig", "evaluate", "generate",
    "Seq2seq", "PeekySeq2seq", "AttentionSeq2seq", "MODELS", "build_model",
    "save_lm", "load_lm", "save_seq2seq", "load_seq2seq", "load_model",
]  # fmt: skip
