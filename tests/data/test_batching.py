import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nprnn.data import BPTTBatches, EvalBatches, shard_rows


def book_train_batches(corpus, batch_size, time_size, iters, time_idx=0):
    """The textbook's get_batch indexing, written out: xs = corpus[:-1], ts = corpus[1:]."""
    xs, ts = corpus[:-1], corpus[1:]
    data_size = len(xs)
    jump = data_size // batch_size
    out = []
    for _ in range(iters):
        bx = np.empty((batch_size, time_size), np.int32)
        bt = np.empty((batch_size, time_size), np.int32)
        for t in range(time_size):
            for i in range(batch_size):
                bx[i, t] = xs[(i * jump + time_idx) % data_size]
                bt[i, t] = ts[(i * jump + time_idx) % data_size]
            time_idx += 1
        out.append((bx, bt))
    return out


def book_eval_batches(corpus, batch_size, time_size):
    """The textbook's eval_perplexity indexing, written out."""
    n = len(corpus)
    jump = (n - 1) // batch_size
    out = []
    for it in range((n - 1) // (batch_size * time_size)):
        bx = np.empty((batch_size, time_size), np.int32)
        bt = np.empty((batch_size, time_size), np.int32)
        for t in range(time_size):
            for i in range(batch_size):
                offset = it * time_size + i * jump
                bx[i, t] = corpus[(offset + t) % n]
                bt[i, t] = corpus[(offset + t + 1) % n]
        out.append((bx, bt))
    return out


def assert_batches_equal(got, expected):
    got = list(got)
    assert len(got) == len(expected)
    for (gx, gt), (ex, et) in zip(got, expected):
        assert gx.dtype == gt.dtype == np.int32
        np.testing.assert_array_equal(gx, ex)
        np.testing.assert_array_equal(gt, et)


sizes = dict(n=st.integers(2, 120), batch_size=st.integers(1, 6), bptt=st.integers(1, 7), seed=st.integers(0, 999))


# ---------------------------------------------------------------- training batches


@settings(max_examples=60, deadline=None)
@given(**sizes, epochs=st.integers(1, 3))
def test_train_batches_equal_the_textbook_formula(n, batch_size, bptt, seed, epochs):
    if (n - 1) // (batch_size * bptt) == 0:
        with pytest.raises(ValueError, match="too few for one batch"):
            BPTTBatches(np.arange(n), batch_size, bptt)
        return
    ids = np.random.default_rng(seed).integers(0, 50, n).astype(np.uint16)
    batches = BPTTBatches(ids, batch_size, bptt)
    assert len(batches) == (n - 1) // (batch_size * bptt)  # the textbook's max_iters
    # fit(max_epoch=E): the time index runs on across epochs.
    got = [b for e in range(epochs) for b in batches.epoch(e)]
    assert_batches_equal(got, book_train_batches(ids, batch_size, bptt, epochs * len(batches)))
    # fit(max_epoch=1) once per epoch: every epoch starts again from the row offsets.
    restart = BPTTBatches(ids, batch_size, bptt, continuous=False)
    one_epoch = book_train_batches(ids, batch_size, bptt, len(batches))
    for e in range(epochs):
        assert_batches_equal(restart.epoch(e), one_epoch)


def test_train_batches_equal_the_textbooks_trainer(dlfs2):
    from common.trainer import RnnlmTrainer

    corpus = np.random.default_rng(0).integers(0, 30, 1003)
    batches = BPTTBatches(corpus, 7, 9)
    trainer = RnnlmTrainer(model=None, optimizer=None)
    trainer.time_idx = 0
    for step in range(2 * len(batches) + 3):  # over two epochs and into a third
        expected = trainer.get_batch(corpus[:-1], corpus[1:], 7, 9)
        assert_batches_equal([batches.batch(step)], [expected])


def test_rows_continue_from_batch_to_batch_and_targets_are_next_tokens():
    ids = np.arange(1000) % 997  # a position-revealing corpus
    batches = BPTTBatches(ids, 4, 10)
    first, second = batches.batch(0), batches.batch(1)
    np.testing.assert_array_equal(first[0][:, 0], [0, 249, 498, 747])  # offsets i * (999 // 4)
    np.testing.assert_array_equal(second[0][:, 0], first[0][:, -1] + 1)
    np.testing.assert_array_equal(first[1], first[0] + 1)


def test_wraps_around_the_end_like_the_textbook():
    ids = np.arange(11)  # data_size 10, batch 2 x 5: one batch per epoch
    batches = BPTTBatches(ids, 2, 5)
    assert len(batches) == 1
    xs, ts = batches.batch(1)  # second epoch, continuous: time_idx 5
    np.testing.assert_array_equal(xs, [[5, 6, 7, 8, 9], [0, 1, 2, 3, 4]])
    np.testing.assert_array_equal(ts, [[6, 7, 8, 9, 10], [1, 2, 3, 4, 5]])


@settings(max_examples=40, deadline=None)
@given(epoch=st.integers(0, 3), start=st.integers(0, 13), continuous=st.booleans())
def test_resume_from_iteration_equals_skipping(epoch, start, continuous):
    ids = np.random.default_rng(epoch).integers(0, 40, 400)
    batches = BPTTBatches(ids, 3, 10, continuous=continuous)
    assert len(batches) == 13
    full = list(batches.epoch(epoch))
    assert_batches_equal(batches.epoch(epoch, start=start), full[start:])
    # A fresh batcher (as after a restart) gives the same batches.
    assert_batches_equal(BPTTBatches(ids, 3, 10, continuous=continuous).epoch(epoch, start=start), full[start:])


def test_epochs_differ_when_continuous():
    ids = np.random.default_rng(1).integers(0, 40, 400)
    batches = BPTTBatches(ids, 3, 10)
    assert not np.array_equal(batches.batch(0)[0], batches.batch(len(batches))[0])
    assert_batches_equal(iter(batches), list(batches.epoch(0)))


@pytest.mark.parametrize("batch_size, world_size", [(6, 1), (6, 2), (7, 3), (5, 5)])
def test_row_shards_partition_the_batch(batch_size, world_size):
    ids = np.random.default_rng(2).integers(0, 40, 500)
    full = BPTTBatches(ids, batch_size, 4)
    shards = [shard_rows(batch_size, r, world_size) for r in range(world_size)]
    covered = np.concatenate([np.arange(batch_size)[s] for s in shards])
    np.testing.assert_array_equal(covered, np.arange(batch_size))  # disjoint, complete, in order
    assert max(s.stop - s.start for s in shards) - min(s.stop - s.start for s in shards) <= 1
    parts = [BPTTBatches(ids, batch_size, 4, rows=s) for s in shards]
    assert all(len(p) == len(full) for p in parts)
    for step in (0, 5, len(full) + 2):
        for j in (0, 1):
            np.testing.assert_array_equal(np.concatenate([p.batch(step)[j] for p in parts]), full.batch(step)[j])


def test_rows_as_index_array():
    ids = np.random.default_rng(3).integers(0, 40, 500)
    full = BPTTBatches(ids, 6, 4).batch(3)
    part = BPTTBatches(ids, 6, 4, rows=np.array([5, 0, 2])).batch(3)
    for j in (0, 1):
        np.testing.assert_array_equal(part[j], full[j][[5, 0, 2]])


# ---------------------------------------------------------------- evaluation batches


@settings(max_examples=60, deadline=None)
@given(**sizes)
def test_eval_batches_equal_the_textbook_formula(n, batch_size, bptt, seed):
    ids = np.random.default_rng(seed).integers(0, 50, n)
    if (n - 1) // (batch_size * bptt) == 0:
        with pytest.raises(ValueError, match="too few for one batch"):
            EvalBatches(ids, batch_size, bptt)
        return
    batches = EvalBatches(ids, batch_size, bptt)
    assert len(batches) == (n - 1) // (batch_size * bptt)
    assert_batches_equal(batches, book_eval_batches(ids, batch_size, bptt))


class RecordingModel:
    """Stands in for a model in the textbook's eval_perplexity and records what it is fed."""

    def __init__(self):
        self.seen = []

    def forward(self, xs, ts, train_flg=False):
        self.seen.append((xs.copy(), ts.copy()))
        return 0.0


@pytest.mark.parametrize("n, batch_size, bptt", [(1000, 10, 35), (731, 3, 8), (12, 1, 11)])
def test_eval_visits_exactly_the_textbooks_tokens(dlfs2, capsys, n, batch_size, bptt):
    from common.util import eval_perplexity

    corpus = np.random.default_rng(n).integers(0, 100, n)
    model = RecordingModel()
    eval_perplexity(model, corpus, batch_size=batch_size, time_size=bptt)
    assert_batches_equal(EvalBatches(corpus, batch_size, bptt), model.seen)


def test_eval_row_shards_partition_the_batch():
    ids = np.random.default_rng(4).integers(0, 40, 700)
    full = list(EvalBatches(ids, 10, 7))
    parts = [list(EvalBatches(ids, 10, 7, rows=shard_rows(10, r, 3))) for r in range(3)]
    for k, (xs, ts) in enumerate(full):
        np.testing.assert_array_equal(np.concatenate([p[k][0] for p in parts]), xs)
        np.testing.assert_array_equal(np.concatenate([p[k][1] for p in parts]), ts)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("cls", [BPTTBatches, EvalBatches])
def test_bad_arguments(cls):
    ids = np.arange(100)
    with pytest.raises(ValueError, match=rf"{cls.__name__}: ids must be a 1-D integer array, got shape \(10, 10\)"):
        cls(ids.reshape(10, 10), 2, 3)
    with pytest.raises(ValueError, match="ids must be a 1-D integer array, got shape .* float64"):
        cls(ids.astype(float), 2, 3)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        cls(ids, 0, 3)
    with pytest.raises(ValueError, match="bptt must be a positive integer, got 2.5"):
        cls(ids, 2, 2.5)
    with pytest.raises(ValueError, match="100 tokens are too few for one batch of batch_size \\* bptt = 10 \\* 10"):
        cls(ids, 10, 10)
    with pytest.raises(ValueError, match=r"rows must be in \[0, 4\) \(batch_size=4\)"):
        cls(ids, 4, 3, rows=[1, 4])
    with pytest.raises(ValueError, match="rows must not repeat"):
        cls(ids, 4, 3, rows=[1, 1])
    with pytest.raises(ValueError, match="rows selects none of the 4 batch rows"):
        cls(ids, 4, 3, rows=slice(4, None))
    with pytest.raises(ValueError, match="rows must be a slice or a 1-D integer array"):
        cls(ids, 4, 3, rows=[0.5])


def test_bad_start_and_index():
    with pytest.raises(ValueError, match=r"start must be in \[0, 8\], got 9"):
        next(BPTTBatches(np.arange(100), 3, 4).epoch(0, start=9))
    with pytest.raises(ValueError, match=r"batch index must be in \[0, 8\), got 8"):
        EvalBatches(np.arange(100), 3, 4).batch(8)


def test_bad_shards():
    with pytest.raises(ValueError, match="world_size 5 exceeds batch_size 4"):
        shard_rows(4, 0, 5)
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\), got 2"):
        shard_rows(4, 2, 2)


@pytest.mark.parametrize("value", [0, -3, 2.5, True, "4", None, np.int64(0)])
def test_counts_use_the_shared_positive_int_check(value):
    """batching has no copy of the check: every count goes through nprnn._checks.positive_int."""
    from nprnn._checks import positive_int

    with pytest.raises(ValueError) as shared:
        positive_int("batch_size", value, "BPTTBatches")
    for call, where in [
        (lambda: BPTTBatches(np.arange(100), value, 3), "BPTTBatches"),
        (lambda: EvalBatches(np.arange(100), value, 3), "EvalBatches"),
        (lambda: shard_rows(value, 0, 1), "shard_rows"),
    ]:
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value) == str(shared.value).replace("BPTTBatches", where)
        assert str(info.value) == f"{where}: batch_size must be a positive integer, got {value!r}"
    assert BPTTBatches(np.arange(100), np.int64(2), np.int32(3)).batch_size == 2  # NumPy integers are fine


def test_data_package_has_no_local_positive_int_copy():
    import inspect

    import nprnn.data.batching as batching

    assert not hasattr(batching, "_positive_int") and "must be a positive integer" not in inspect.getsource(batching)
