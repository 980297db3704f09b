"""Truncated-BPTT batches over a 1-D token-id array, indexed exactly as the textbook does.

Training, ``BPTTBatches`` (the textbook's ``RnnlmTrainer.get_batch``): inputs are
``ids[:-1]``, targets the next tokens ``ids[1:]``; ``data_size = len(ids) - 1``. The
corpus is cut into ``batch_size`` streams starting at ``offsets[i] = i * (data_size //
batch_size)``, and batch ``k`` holds, for row ``i`` and step ``t``::

    position = (offsets[i] + k * bptt + t) % data_size
    xs[i, t] = ids[position]
    ts[i, t] = ids[position + 1]

so row ``i`` of batch ``k + 1`` continues row ``i`` of batch ``k``, which is what lets a
stateful RNN carry its hidden state from batch to batch. An epoch has
``data_size // (batch_size * bptt)`` batches.

Evaluation, ``EvalBatches`` (the textbook's ``eval_perplexity``): rows start at
``i * ((len(ids) - 1) // batch_size)``, batch ``k`` reads ``ids[(offsets[i] + k * bptt + t)
% len(ids)]`` with the following token as target, for ``(len(ids) - 1) // (batch_size * bptt)``
batches. Each row scores a stretch of consecutive tokens; the few tokens between the end
of one row's stretch and the next row's start (fewer than ``bptt`` per row) are not scored,
as in the textbook.

Both gather only the tokens of the batch by fancy indexing, so ``ids`` may be a
memory-mapped array (``nprnn.data.open_ids``) that never gets loaded whole. Batches
are ``int32`` ``(N, T)`` arrays whatever the storage dtype. ``rows`` selects a subset of
the batch rows (a slice or index array into ``range(batch_size)``): data-parallel ranks
each take a disjoint share (``shard_rows``) and together see exactly the full batch.
"""

import numpy as np

from nprnn._checks import positive_int
from nprnn.data.corpus import DataError


def _check_ids(name, ids):
    if not isinstance(ids, np.ndarray):  # an np.memmap stays itself: nothing gets read here
        ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name}: ids must be a 1-D integer array, got shape {ids.shape} {ids.dtype}")
    return ids


def _select_rows(name, rows, batch_size):
    """The selected batch rows as an index array into ``range(batch_size)``."""
    all_rows = np.arange(batch_size)
    if rows is None:
        return all_rows
    if isinstance(rows, slice):
        selected = all_rows[rows]
    else:
        selected = np.asarray(rows)
        if selected.ndim != 1 or not (selected.size == 0 or np.issubdtype(selected.dtype, np.integer)):
            raise ValueError(f"{name}: rows must be a slice or a 1-D integer array, got {rows!r}")
        if selected.size and (selected.min() < 0 or selected.max() >= batch_size):
            raise ValueError(f"{name}: rows must be in [0, {batch_size}) (batch_size={batch_size}), got {rows!r}")
        if len(np.unique(selected)) != len(selected):
            raise ValueError(f"{name}: rows must not repeat, got {rows!r}")
    if selected.size == 0:
        raise ValueError(f"{name}: rows selects none of the {batch_size} batch rows, got {rows!r}")
    return selected.astype(np.int64)


def _too_few(name, tokens, batch_size, bptt):
    return ValueError(
        f"{name}: {tokens} tokens are too few for one batch of batch_size * bptt = {batch_size} * {bptt}; "
        f"need at least {batch_size * bptt + 1}"
    )


def shard_rows(batch_size, rank, world_size):
    """The contiguous slice of batch rows of ``rank`` among ``world_size`` ranks (sizes differ by at most 1)."""
    batch_size = positive_int("batch_size", batch_size, "shard_rows")
    world_size = positive_int("world_size", world_size, "shard_rows")
    if world_size > batch_size:
        raise ValueError(
            f"shard_rows: world_size {world_size} exceeds batch_size {batch_size}; a rank would get no row"
        )
    if not 0 <= rank < world_size:
        raise ValueError(f"shard_rows: rank must be in [0, {world_size}), got {rank}")
    base, extra = divmod(batch_size, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


class BPTTBatches:
    """Training batches ``(xs, ts)``, both ``(N, T)`` int32, in the textbook's truncated-BPTT order.

    ``N`` is ``batch_size`` (or the number of selected ``rows``), ``T`` is ``bptt``.
    ``len()`` is the number of batches per epoch. ``batch(step)`` is the batch of a global
    step (counting from 0 across epochs); ``epoch(e, start=k)`` yields the batches of epoch
    ``e`` from its ``k``-th on, so a run resumed at (epoch, iteration) sees exactly the
    batches it would have seen.

    continuous=True: the time index keeps running across epochs, as in the textbook's
    ``fit(max_epoch=E)``; each row carries on where it stopped. continuous=False: every
    epoch restarts at the row offsets, as the textbook's ``BetterRnnlm`` script does by
    calling ``fit(max_epoch=1)`` once per epoch.
    """

    def __init__(self, ids, batch_size, bptt, *, rows=None, continuous=True):
        name = "BPTTBatches"
        self.ids = _check_ids(name, ids)
        self.batch_size = positive_int("batch_size", batch_size, name)
        self.bptt = positive_int("bptt", bptt, name)
        self.data_size = len(self.ids) - 1
        self.iters_per_epoch = max(self.data_size, 0) // (self.batch_size * self.bptt)
        if self.iters_per_epoch == 0:
            raise _too_few(name, len(self.ids), self.batch_size, self.bptt)
        self.rows = _select_rows(name, rows, self.batch_size)
        self.offsets = self.rows * (self.data_size // self.batch_size)
        self.continuous = continuous

    def __len__(self):
        return self.iters_per_epoch

    def positions(self, step):
        """Indices into ``ids`` of the inputs of batch ``step``, ``(N, T)``; the targets are at ``+ 1``."""
        if not self.continuous:
            step %= self.iters_per_epoch
        time_idx = step * self.bptt
        return (self.offsets[:, None] + (time_idx + np.arange(self.bptt))) % self.data_size

    def batch(self, step):
        pos = self.positions(step)
        return np.array(self.ids[pos], dtype=np.int32), np.array(self.ids[pos + 1], dtype=np.int32)

    def epoch(self, epoch=0, start=0):
        """Yield the batches of epoch ``epoch`` (0-based) from its iteration ``start`` on."""
        if not 0 <= start <= len(self):
            raise ValueError(f"BPTTBatches: start must be in [0, {len(self)}], got {start}")
        first = epoch * len(self)
        for k in range(start, len(self)):
            yield self.batch(first + k)

    def __iter__(self):
        return self.epoch(0)


class EvalBatches:
    """Evaluation batches ``(xs, ts)``, both ``(N, T)`` int32, as the textbook's ``eval_perplexity`` reads them.

    The textbook's perplexity is ``exp(mean over batches of the batch's mean loss)``; all
    batches have the same size, so that is also the mean over every visited token.
    """

    def __init__(self, ids, batch_size=10, bptt=35, *, rows=None):
        name = "EvalBatches"
        self.ids = _check_ids(name, ids)
        self.batch_size = positive_int("batch_size", batch_size, name)
        self.bptt = positive_int("bptt", bptt, name)
        self.corpus_size = len(self.ids)
        self.max_iters = max(self.corpus_size - 1, 0) // (self.batch_size * self.bptt)
        if self.max_iters == 0:
            raise _too_few(name, self.corpus_size, self.batch_size, self.bptt)
        self.rows = _select_rows(name, rows, self.batch_size)
        self.offsets = self.rows * ((self.corpus_size - 1) // self.batch_size)

    def __len__(self):
        return self.max_iters

    def batch(self, k):
        if not 0 <= k < self.max_iters:
            raise ValueError(f"EvalBatches: batch index must be in [0, {self.max_iters}), got {k}")
        unwrapped = self.offsets[:, None] + (k * self.bptt + np.arange(self.bptt))
        xs = self.ids[unwrapped % self.corpus_size]
        ts = self.ids[(unwrapped + 1) % self.corpus_size]
        return np.array(xs, dtype=np.int32), np.array(ts, dtype=np.int32)

    def __iter__(self):
        for k in range(self.max_iters):
            yield self.batch(k)


def check_batchable(ids, batch_size, bptt, where, options):
    """DataError naming ``where`` unless ``ids`` fill at least one ``batch_size x bptt`` batch."""
    need = batch_size * bptt + 1
    if len(ids) < need:
        raise DataError(
            f"{where}: {len(ids):,} tokens, too few for one batch of {batch_size} x {bptt} (need {need:,}); "
            f"use smaller {options} or more data"
        )
