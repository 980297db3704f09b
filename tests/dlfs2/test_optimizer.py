"""nprnn.dlfs2.optimizer: every update equals the textbook's bit for bit, and its attributes are the book's."""

import numpy as np
import pytest

from nprnn import optim
from nprnn.dlfs2 import optimizer as O

SETTINGS = {
    "SGD": {"lr": 0.1},
    "Momentum": {"lr": 0.05, "momentum": 0.8},
    "Nesterov": {"lr": 0.05, "momentum": 0.9},
    "AdaGrad": {"lr": 0.1},
    "RMSprop": {"lr": 0.01, "decay_rate": 0.9},
    "Adam": {"lr": 0.01, "beta1": 0.8, "beta2": 0.99},
}


def problem(rng, dtype):
    shapes = [(5, 4), (4,), (3, 3, 2), (64, 50)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(4)]
    return params, grads


@pytest.fixture(params=["numpy", "numba"])
def backend(request):
    """Both paths of the updates: NumPy's, and the fused kernels where there are any (Adam)."""
    from nprnn import accel

    if request.param == "numba":
        pytest.importorskip("numba")
    previous = accel.backend()
    accel.use(request.param)
    yield request.param
    accel.use(previous)


@pytest.mark.parametrize("name", list(SETTINGS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_updates_equal_the_books_bit_for_bit(dlfs2, rng, name, dtype, backend):
    from common import optimizer as B

    params, grads = problem(rng, dtype)
    ours, book = getattr(O, name)(**SETTINGS[name]), getattr(B, name)(**SETTINGS[name])
    p_ours, p_book = [p.copy() for p in params], [p.copy() for p in params]
    arrays = [id(p) for p in p_ours]
    for step, g in enumerate(grads):
        if step == 2:  # a script changing the learning rate between epochs
            ours.lr = book.lr = SETTINGS[name]["lr"] / 4
        ours.update(p_ours, [x.copy() for x in g])
        book.update(p_book, [x.copy() for x in g])
        for a, b in zip(p_ours, p_book):
            assert a.dtype == dtype
            np.testing.assert_array_equal(a, b)
    assert [id(p) for p in p_ours] == arrays  # updated in place
    for attr in ("v", "h", "m"):
        if hasattr(book, attr):
            for a, b in zip(getattr(ours, attr), getattr(book, attr)):
                np.testing.assert_array_equal(a, b)
    if name == "Adam":
        assert ours.iter == book.iter == len(grads)


@pytest.mark.parametrize("name", ["Nesterov", "AdaGrad", "RMSprop", "Adam"])
def test_agrees_with_nprnn_optim_book_variants(rng, name):
    params, grads = problem(rng, np.float64)
    ours, core = getattr(O, name)(**SETTINGS[name]), getattr(optim, name)(**SETTINGS[name], book=True)
    p_ours, p_core = [p.copy() for p in params], [p.copy() for p in params]
    for g in grads:
        ours.update(p_ours, [x.copy() for x in g])
        core.update(p_core, [x.copy() for x in g])
    for a, b in zip(p_ours, p_core):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_book_defaults():
    assert O.SGD().lr == 0.01 and O.Adam().lr == 0.001 and O.Adam().iter == 0 and O.Adam().m is None
    assert O.Momentum().momentum == 0.9 and O.RMSprop().decay_rate == 0.99 and O.AdaGrad().h is None
