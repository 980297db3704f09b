"""Data for language models: vocabularies, corpora, compact id storage and truncated-BPTT batches."""

from nprnn.data.batching import BPTTBatches, EvalBatches, shard_rows
from nprnn.data.corpus import (
    Corpus,
    DataError,
    builtin_text,
    encode_file,
    load_corpus,
    open_ids,
    read_text,
    save_ids,
    split_lines,
)
from nprnn.data.vocab import EOS, UNK, CharVocab, Vocab, tokenize

__all__ = [
    "BPTTBatches",
    "CharVocab",
    "Corpus",
    "DataError",
    "EOS",
    "EvalBatches",
    "UNK",
    "Vocab",
    "builtin_text",
    "encode_file",
    "load_corpus",
    "open_ids",
    "read_text",
    "save_ids",
    "shard_rows",
    "split_lines",
    "tokenize",
]
