"""Optimizers, clipping, tied weights and schedules: against hand-computed steps, torch.optim
and the textbook's common/optimizer.py; state_dict round trips continue bit for bit."""

import contextlib
import io
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nprnn.gradcheck import numerical_gradient, relative_error
from nprnn.optim import (
    SGD,
    AdaGrad,
    Adam,
    AdamW,
    Cosine,
    DivideOnPlateau,
    Momentum,
    Nesterov,
    RMSprop,
    StepDecay,
    clip_grads,
    clip_rate,
    grad_norm,
    unique_params,
)

torch = None  # bound by the torch_module fixture: only the parity tests need torch


@pytest.fixture
def torch_module():
    global torch
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


SHAPES = [(3, 4), (4,), (2, 3, 2)]


def random_params(rng, dtype=np.float64):
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def random_grads(rng, steps, dtype=np.float64):
    return [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]


def run(opt, params, grad_seq):
    for grads in grad_seq:
        opt.update(params, [g.copy() for g in grads])
    return params


# ---------------------------------------------------------------- hand-computed steps

# One scalar parameter p0 = 1 with gradients 0.5, -1, 2 and lr = 0.1; each row is the value
# after each of the three steps, derived by hand from the optimizer's formula.
G = [0.5, -1.0, 2.0]
E10, E8, E7 = 1e-10, 1e-8, 1e-7


def adam_by_hand(eps, book):
    b1, b2, lr, p, m, v, out = 0.9, 0.999, 0.1, 1.0, 0.0, 0.0, []
    for t, g in enumerate(G, start=1):
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        if book:
            p -= lr * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (math.sqrt(v) + eps)
        else:
            p -= lr * (m / (1 - b1**t)) / (math.sqrt(v / (1 - b2**t)) + eps)
        out.append(p)
    return out


HAND = {
    "sgd": (lambda: SGD(lr=0.1), [0.95, 1.05, 0.85]),
    # v: -0.05, 0.055, -0.1505
    "momentum": (lambda: Momentum(lr=0.1, momentum=0.9), [0.95, 1.005, 0.8545]),
    # p += 0.9 v - 0.1 g
    "nesterov": (
        lambda: Nesterov(lr=0.1, momentum=0.9),
        [1 - 0.045 - 0.05, 0.905 + 0.0495 + 0.1, 1.0545 - 0.13545 - 0.2],
    ),
    # p += 0.81 v - 0.19 g, with the updated v
    "nesterov-book": (
        lambda: Nesterov(lr=0.1, momentum=0.9, book=True),
        [1 - 0.0405 - 0.095, 0.8645 + 0.04455 + 0.19, 1.09905 - 0.121905 - 0.38],
    ),
    # h: 0.25, 1.25, 5.25
    "adagrad": (
        lambda: AdaGrad(lr=0.1),
        np.cumsum([1, -0.05 / (0.5 + E10), 0.1 / (math.sqrt(1.25) + E10), -0.2 / (math.sqrt(5.25) + E10)])[1:],
    ),
    "adagrad-book": (
        lambda: AdaGrad(lr=0.1, book=True),
        np.cumsum([1, -0.05 / (0.5 + E7), 0.1 / (math.sqrt(1.25) + E7), -0.2 / (math.sqrt(5.25) + E7)])[1:],
    ),
    # rho = 0.9, h: 0.025, 0.1225, 0.51025
    "rmsprop": (
        lambda: RMSprop(lr=0.1, decay_rate=0.9),
        np.cumsum([1, -0.05 / (math.sqrt(0.025) + E8), 0.1 / (0.35 + E8), -0.2 / (math.sqrt(0.51025) + E8)])[1:],
    ),
    "rmsprop-book": (
        lambda: RMSprop(lr=0.1, decay_rate=0.9, book=True),
        np.cumsum([1, -0.05 / (math.sqrt(0.025) + E7), 0.1 / (0.35 + E7), -0.2 / (math.sqrt(0.51025) + E7)])[1:],
    ),
    "adam": (lambda: Adam(lr=0.1), adam_by_hand(E8, book=False)),
    "adam-book": (lambda: Adam(lr=0.1, book=True), adam_by_hand(E7, book=True)),
    # p *= 1 - 0.1 * 0.5 before each Adam step: adam_by_hand with the shrink folded in
    "adamw": (lambda: AdamW(lr=0.1, weight_decay=0.5), None),
}


@pytest.mark.parametrize("name", sorted(HAND))
def test_hand_computed_steps(name):
    make, expected = HAND[name]
    if name == "adamw":
        b1, b2, lr, p, m, v, expected = 0.9, 0.999, 0.1, 1.0, 0.0, 0.0, []
        for t, g in enumerate(G, start=1):
            p *= 1 - lr * 0.5
            m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
            p -= lr * (m / (1 - b1**t)) / (math.sqrt(v / (1 - b2**t)) + E8)
            expected.append(p)
    opt, p = make(), np.array([1.0])
    got = []
    for g in G:
        opt.update([p], [np.array([g])])
        got.append(p[0])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)
    assert opt.t == 3


def test_adam_first_step_is_lr_times_sign():
    # bias correction makes the first step lr * g / |g| whatever the scale of g
    p = np.array([0.0, 0.0, 0.0])
    Adam(lr=0.01).update([p], [np.array([1e-3, -5.0, 300.0])])
    np.testing.assert_allclose(p, [-0.01, 0.01, -0.01], rtol=1e-4)


# ---------------------------------------------------------------- torch.optim

TORCH = {
    "sgd": (lambda: SGD(lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1)),
    "momentum": (lambda: Momentum(lr=0.1, momentum=0.9), lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)),
    "nesterov": (
        lambda: Nesterov(lr=0.1, momentum=0.8),
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.8, nesterov=True),
    ),
    "adagrad": (lambda: AdaGrad(lr=0.1), lambda ps: torch.optim.Adagrad(ps, lr=0.1)),
    "adagrad-book": (
        lambda: AdaGrad(lr=0.1, book=True),
        lambda ps: torch.optim.Adagrad(ps, lr=0.1, eps=1e-7),
    ),
    "rmsprop": (lambda: RMSprop(lr=0.01), lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.99)),
    "rmsprop-book": (
        lambda: RMSprop(lr=0.01, decay_rate=0.9, book=True),
        lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=1e-7),
    ),
    "adam": (lambda: Adam(lr=0.01), lambda ps: torch.optim.Adam(ps, lr=0.01)),
    "adam-betas": (
        lambda: Adam(lr=0.05, beta1=0.5, beta2=0.9, eps=1e-3),
        lambda ps: torch.optim.Adam(ps, lr=0.05, betas=(0.5, 0.9), eps=1e-3),
    ),
    # the textbook's Adam differs from torch's only in where eps goes: with eps = 0 they agree
    "adam-book-eps0": (
        lambda: Adam(lr=0.01, eps=0.0, book=True),
        lambda ps: torch.optim.Adam(ps, lr=0.01, eps=0.0),
    ),
    "adamw": (lambda: AdamW(lr=0.01), lambda ps: torch.optim.AdamW(ps, lr=0.01)),
    "adamw-wd": (
        lambda: AdamW(lr=0.05, weight_decay=0.3, eps=1e-6),
        lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=0.3, eps=1e-6),
    ),
}


def torch_run(make_torch, params, grad_seq):
    tensors = [torch.tensor(p, requires_grad=True) for p in params]
    opt = make_torch(tensors)
    for grads in grad_seq:
        for t, g in zip(tensors, grads):
            t.grad = torch.tensor(g)
        opt.step()
    return [t.detach().numpy() for t in tensors]


@pytest.mark.parametrize("name", sorted(TORCH))
def test_matches_torch(rng, name, torch_module):
    make_ours, make_torch = TORCH[name]
    params, grad_seq = random_params(rng), random_grads(rng, 5)
    expected = torch_run(make_torch, params, grad_seq)
    got = run(make_ours(), [p.copy() for p in params], grad_seq)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-14)
    assert not np.allclose(got[0], params[0], atol=1e-4)  # the run did move the parameters


def test_book_adam_differs_from_torch_by_eps_placement(rng, torch_module):
    """The documented difference is real: with a large eps the two Adam forms part ways."""
    params, grad_seq = random_params(rng), random_grads(rng, 3)
    book = run(Adam(lr=0.01, eps=0.1, book=True), [p.copy() for p in params], grad_seq)
    default = run(Adam(lr=0.01, eps=0.1), [p.copy() for p in params], grad_seq)
    expected = torch_run(lambda ps: torch.optim.Adam(ps, lr=0.01, eps=0.1), params, grad_seq)
    np.testing.assert_allclose(default[0], expected[0], rtol=1e-12)
    assert np.max(np.abs(book[0] - expected[0])) > 1e-5


def test_momentum_after_lr_change_differs_from_torch_as_documented(rng, torch_module):
    """Textbook velocity form: an lr change affects new gradients only; torch rescales its buffer."""
    p0, (g1, g2) = np.array([1.0]), (np.array([1.0]), np.array([1.0]))
    opt = Momentum(lr=0.1, momentum=0.9)
    p = p0.copy()
    opt.update([p], [g1])
    opt.lr = 0.01
    opt.update([p], [g2])
    # v1 = -0.1; v2 = 0.9 * -0.1 - 0.01 = -0.1; torch would step -0.01 * (0.9 + 1) = -0.019
    np.testing.assert_allclose(p, [1 - 0.1 - 0.1], rtol=1e-14)


# ---------------------------------------------------------------- the textbook's optimizers


BOOK = {
    "SGD": (lambda: SGD(lr=0.1), {"lr": 0.1}),
    "Momentum": (lambda: Momentum(lr=0.1, momentum=0.8), {"lr": 0.1, "momentum": 0.8}),
    "Nesterov": (lambda: Nesterov(lr=0.1, momentum=0.8, book=True), {"lr": 0.1, "momentum": 0.8}),
    "AdaGrad": (lambda: AdaGrad(lr=0.1, book=True), {"lr": 0.1}),
    "RMSprop": (lambda: RMSprop(lr=0.01, decay_rate=0.9, book=True), {"lr": 0.01, "decay_rate": 0.9}),
    "Adam": (lambda: Adam(lr=0.01, book=True), {"lr": 0.01}),
}


@pytest.mark.parametrize("name", sorted(BOOK))
def test_book_variant_matches_textbook_code(dlfs2, rng, name):
    import common.optimizer as book_optim

    make_ours, kwargs = BOOK[name]
    params, grad_seq = random_params(rng), random_grads(rng, 5)
    theirs, ours = [p.copy() for p in params], [p.copy() for p in params]
    book, opt = getattr(book_optim, name)(**kwargs), make_ours()
    for step, grads in enumerate(grad_seq):
        if step == 3:  # an lr change mid-run (what the schedules do) must act the same way
            book.lr = opt.lr = kwargs["lr"] / 4
        book.update(theirs, [g.copy() for g in grads])
        opt.update(ours, [g.copy() for g in grads])
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_default_nesterov_is_not_the_textbook_variant(dlfs2, rng):
    import common.optimizer as book_optim

    params, grad_seq = random_params(rng), random_grads(rng, 3)
    theirs = run(book_optim.Nesterov(lr=0.1, momentum=0.9), [p.copy() for p in params], grad_seq)
    ours = run(Nesterov(lr=0.1, momentum=0.9), [p.copy() for p in params], grad_seq)
    assert np.max(np.abs(ours[0] - theirs[0])) > 1e-3


# ---------------------------------------------------------------- state_dict: exact resume

ALL = {
    "sgd": lambda: SGD(lr=0.05),
    "momentum": lambda: Momentum(lr=0.05, momentum=0.7),
    "nesterov": lambda: Nesterov(lr=0.05),
    "nesterov-book": lambda: Nesterov(lr=0.05, book=True),
    "adagrad": lambda: AdaGrad(lr=0.05),
    "rmsprop-book": lambda: RMSprop(lr=0.01, book=True),
    "adam": lambda: Adam(lr=0.01, beta1=0.8),
    "adam-book": lambda: Adam(lr=0.01, book=True),
    "adamw": lambda: AdamW(lr=0.01, weight_decay=0.1),
}


def through_npz(state):
    """What a checkpoint does to a state dict: every value becomes an array, loaded without pickle."""
    buf = io.BytesIO()
    np.savez(buf, **state)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_state_dict_round_trip_continues_identically(rng, name, dtype):
    params, grad_seq = random_params(rng, dtype), random_grads(rng, 6, dtype)
    straight = run(ALL[name](), [p.copy() for p in params], grad_seq)

    first = ALL[name]()
    resumed = run(first, [p.copy() for p in params], grad_seq[:3])
    state = first.state_dict()
    assert all(isinstance(v, (int, float, np.ndarray)) and not isinstance(v, bool) for v in state.values())
    assert state["t"] == 3 and state["n_params"] == len(SHAPES)

    fresh = type(first)(lr=123.0)  # settings come back from the state, not the constructor
    fresh.load_state_dict(through_npz(state))
    assert fresh.lr == first.lr and fresh.t == 3
    run(fresh, resumed, grad_seq[3:])
    for a, b in zip(resumed, straight):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)


def test_state_dict_is_a_copy(rng):
    opt = Adam()
    params = random_params(rng)
    run(opt, params, random_grads(rng, 1))
    state = opt.state_dict()
    state["m.0"][...] = 99
    assert not np.any(opt.state["m"][0] == 99)


def test_state_dict_before_any_update_round_trips():
    opt = Momentum(lr=0.3)
    fresh = Momentum()
    fresh.load_state_dict(opt.state_dict())
    assert fresh.lr == 0.3 and fresh.state is None and fresh.t == 0


def test_load_state_dict_of_another_optimizer_is_refused(rng):
    adam = Adam()
    run(adam, random_params(rng), random_grads(rng, 1))
    with pytest.raises(ValueError, match=r"SGD: state does not match.*unexpected \['beta1'"):
        SGD().load_state_dict(adam.state_dict())
    state = adam.state_dict()
    del state["v.2"]
    with pytest.raises(ValueError, match=r"missing \['v.2'\]"):
        Adam().load_state_dict(state)
    state = adam.state_dict()
    state["m.0"] = "junk"
    with pytest.raises(ValueError, match="state m.0 must be a float32/float64 array"):
        Adam().load_state_dict(state)
    state = adam.state_dict()
    state["lr"] = np.zeros(3)
    with pytest.raises(ValueError, match="'lr' must be a number"):
        Adam().load_state_dict(state)


def test_loaded_state_for_another_model_is_refused_on_update(rng):
    adam = Adam()
    run(adam, random_params(rng), random_grads(rng, 1))
    fresh = Adam()
    fresh.load_state_dict(adam.state_dict())
    with pytest.raises(ValueError, match=r"params\[0\] is float64 \(4, 3\).*'m' for it is float64 \(3, 4\)"):
        fresh.update(
            [np.zeros((4, 3)), np.zeros(4), np.zeros((2, 3, 2))], [np.zeros((4, 3)), np.zeros(4), np.zeros((2, 3, 2))]
        )
    with pytest.raises(ValueError, match="got 1 parameters, but the optimizer state was built for 3"):
        fresh.update([np.zeros((3, 4))], [np.zeros((3, 4))])


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: SGD(lr=-1), r"lr must be a finite number in \[0.0, inf\)"),
        (lambda: SGD(lr=float("nan")), "lr must be a finite number"),
        (lambda: SGD(lr="fast"), "lr must be a number, got 'fast'"),
        (lambda: Momentum(momentum=1.0), r"momentum must be a finite number in \[0.0, 1.0\)"),
        (lambda: Adam(beta2=1.5), "beta2"),
        (lambda: AdaGrad(eps=-1e-8), "eps"),
        (lambda: AdamW(weight_decay=-0.1), "weight_decay"),
    ],
)
def test_bad_settings(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_lr_setter_checks():
    opt = SGD()
    opt.lr = np.float64(0.5)
    assert type(opt.lr) is float  # a NumPy scalar lr would upcast float32 updates to float64
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -0.1


def test_update_bad_input():
    opt = SGD()
    p = np.zeros((2, 3))
    with pytest.raises(ValueError, match="got 1 params but 2 grads"):
        opt.update([p], [p, p])
    with pytest.raises(
        ValueError, match=r"grads\[0\] must match params\[0\] \(float64 \(2, 3\)\), got float64 \(3, 2\)"
    ):
        opt.update([p], [np.zeros((3, 2))])
    with pytest.raises(ValueError, match=r"grads\[0\] must match.*got float32"):
        opt.update([p], [np.zeros((2, 3), np.float32)])
    with pytest.raises(ValueError, match=r"params\[0\] must be float32 or float64, got int64"):
        opt.update([np.zeros(3, np.int64)], [np.zeros(3, np.int64)])
    with pytest.raises(ValueError, match="must be a list of NumPy arrays"):
        opt.update(p, p)
    with pytest.raises(ValueError, match="must be NumPy arrays, got list"):
        opt.update([[1.0]], [[1.0]])
    ro = np.zeros(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        opt.update([ro], [np.zeros(3)])


def test_update_refuses_tied_params_not_merged():
    W = np.ones((3, 2))
    with pytest.raises(ValueError, match=r"params\[0\] and params\[1\] share memory.*unique_params"):
        SGD().update([W, W.T], [np.ones((3, 2)), np.ones((2, 3))])
    assert np.all(W == 1)


def test_float32_stays_float32(rng):
    params32, grads = random_params(rng, np.float32), random_grads(rng, 3, np.float32)
    params64 = [p.astype(np.float64) for p in params32]
    run(Adam(lr=0.01), params32, grads)
    run(Adam(lr=0.01), params64, [[g.astype(np.float64) for g in gs] for gs in grads])
    for p32, p64 in zip(params32, params64):
        assert p32.dtype == np.float32
        np.testing.assert_allclose(p32, p64, rtol=1e-5, atol=1e-6)


ALL_OPTIMIZERS = {
    "sgd": lambda: SGD(lr=0.37),
    "momentum": lambda: Momentum(lr=0.37, momentum=0.7),
    "nesterov": lambda: Nesterov(lr=0.1),
    "adagrad": lambda: AdaGrad(lr=0.1),
    "rmsprop": lambda: RMSprop(lr=0.1),
    "adam": lambda: Adam(lr=0.01, beta1=0.8),
    "adam-book": lambda: Adam(lr=0.01, book=True),
    "adamw": lambda: AdamW(lr=0.01, weight_decay=0.1),
}
FUSED = ["sgd", "momentum", "adam", "adam-book", "adamw"]  # those with numba kernels


def params_and_grads(rng, dtype, steps):
    shapes = [(64, 50), (7,), (3, 4, 5)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    return params, [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]


@contextlib.contextmanager
def accel_backend(name):
    if name == "numba":
        pytest.importorskip("numba")
    from nprnn import accel

    previous = accel.backend()
    accel.use(name)
    try:
        yield
    finally:
        accel.use(previous)


@pytest.mark.parametrize("name", FUSED)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_fused_step_equals_numpys_bit_for_bit(rng, name, dtype):
    params, grads = params_and_grads(rng, dtype, 4)
    runs = {}
    for backend in ("numpy", "numba"):
        with accel_backend(backend):
            runs[backend] = run(ALL_OPTIMIZERS[name](), [p.copy() for p in params], grads)
    for a, b, before in zip(runs["numba"], runs["numpy"], params):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, before)


@pytest.mark.parametrize("name", ALL_OPTIMIZERS)
@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_update_with_grad_scale_equals_clipping_first_bit_for_bit(rng, name, backend, dtype):
    """What the training loop does (clip_rate, then update(grad_scale=rate)) against clip_grads then
    update; the fused kernels leave the gradients unscaled, the rest scale them as clip_grads would."""
    params, grad_seq = params_and_grads(rng, dtype, 3)
    with accel_backend(backend):
        clipped, scaled = ALL_OPTIMIZERS[name](), ALL_OPTIMIZERS[name]()
        ps_clipped, ps_scaled = [p.copy() for p in params], [p.copy() for p in params]
        for grads in grad_seq:
            g_clipped, g_scaled = [g.copy() for g in grads], [g.copy() for g in grads]
            clip_grads(g_clipped, 1.5)
            clipped.update(ps_clipped, g_clipped)
            rate = clip_rate(grad_norm(g_scaled), 1.5)
            assert 0 < rate < 1
            scaled.update(ps_scaled, g_scaled, grad_scale=rate)
            for g, g0, gc in zip(g_scaled, grads, g_clipped):  # left as they were, or scaled like clip_grads
                assert np.array_equal(g, g0) or np.array_equal(g, gc)
    for a, b in zip(ps_scaled, ps_clipped):
        np.testing.assert_array_equal(a, b)


def test_clip_rate():
    assert clip_rate(10.0, 1.0) == pytest.approx(0.1)
    assert clip_rate(0.5, 1.0) == 1.0
    assert clip_rate(math.inf, 1.0) == 1.0 and clip_rate(math.nan, 1.0) == 1.0
    with pytest.raises(ValueError, match="grad_scale must be a finite number"):
        SGD().update([np.zeros(2)], [np.zeros(2)], grad_scale=math.nan)


def test_params_are_updated_in_place(rng):
    params = random_params(rng)
    ids = [id(p) for p in params]
    before = [p.copy() for p in params]
    Nesterov().update(params, [np.ones_like(p) for p in params])
    assert [id(p) for p in params] == ids
    assert all(np.all(p != b) for p, b in zip(params, before))


# ---------------------------------------------------------------- tied weights


def test_unique_params_same_array_twice():
    W, b = np.zeros((3, 2)), np.zeros(2)
    g1, g2, gb = np.full((3, 2), 1.0), np.full((3, 2), 2.0), np.ones(2)
    params, grads = unique_params([W, b, W], [g1, gb, g2])
    assert len(params) == 2 and params[0] is W and params[1] is b
    np.testing.assert_array_equal(grads[0], np.full((3, 2), 3.0))
    assert grads[0] is g1  # summed in place, as the textbook does


def test_unique_params_view_with_same_layout():
    W = np.zeros((3, 2))
    params, grads = unique_params([W, W[...]], [np.ones((3, 2)), np.ones((3, 2))])
    assert len(params) == 1
    np.testing.assert_array_equal(grads[0], 2.0)


def test_tied_embedding_and_output_gradient_is_the_sum(rng):
    """A tiny language model with W used as an embedding (rows) and, transposed, as the output
    projection: the merged gradient is the gradient of the loss w.r.t. the one shared W."""
    V, H = 5, 3
    W = rng.standard_normal((V, H))
    ids = np.array([0, 3, 3, 1])
    R = rng.standard_normal((4, V))
    W_out = W.T  # the textbook's BetterRnnlm: TimeAffine(embed_W.T, b)

    def loss():
        return float(np.sum((np.tanh(W[ids]) @ W_out) * R))

    h = np.tanh(W[ids])
    dW_out = h.T @ R  # (H, V): gradient as the output layer sees it
    dh = (R @ W_out.T) * (1 - h**2)
    dW_embed = np.zeros_like(W)
    np.add.at(dW_embed, ids, dh)

    params, grads = unique_params([W, W_out], [dW_embed, dW_out])
    assert len(params) == 1 and params[0] is W
    assert relative_error(grads[0], numerical_gradient(loss, W)) < 1e-8

    before, merged = W.copy(), grads[0].copy()
    SGD(lr=0.1).update(params, grads)  # one update of the shared weight, seen by both uses
    np.testing.assert_allclose(W, before - 0.1 * merged, rtol=1e-15)
    np.testing.assert_array_equal(W_out, W.T)


def test_tied_update_happens_once(rng):
    W = rng.standard_normal((4, 3))
    before = W.copy()
    gW, gWT = rng.standard_normal((4, 3)), rng.standard_normal((3, 4))
    params, grads = unique_params([W, W.T], [gW.copy(), gWT.copy()])
    SGD(lr=0.5).update(params, grads)
    np.testing.assert_allclose(W, before - 0.5 * (gW + gWT.T), rtol=1e-14)


def test_unique_params_matches_textbook_remove_duplicate_on_tying(dlfs2, rng):
    from common.trainer import remove_duplicate

    W, b, U = rng.standard_normal((5, 3)), rng.standard_normal(3), rng.standard_normal((3, 3))
    params = [W, U, b, W.T, U]
    grads = [rng.standard_normal(p.shape) for p in params]
    theirs = remove_duplicate(params, [g.copy() for g in grads])
    ours = unique_params(params, [g.copy() for g in grads])
    assert [p.shape for p in ours[0]] == [p.shape for p in theirs[0]]
    for a, b_ in zip(ours[0], theirs[0]):
        assert a is b_
    for a, b_ in zip(ours[1], theirs[1]):
        np.testing.assert_allclose(a, b_, rtol=1e-14)


def test_equal_but_separate_arrays_are_not_merged(dlfs2, rng):
    """The textbook merges by value (params[i].T == params[j]); two separate zero matrices, or a
    symmetric matrix and its copy, would be wrongly tied. nprnn looks at memory only."""
    from common.trainer import remove_duplicate

    S = rng.standard_normal((3, 3))
    S = S + S.T
    params = [S, S.copy(), np.zeros((2, 4)), np.zeros((4, 2))]
    grads = [np.ones_like(p) for p in params]
    assert len(remove_duplicate(params, [g.copy() for g in grads])[0]) == 2  # the textbook's false ties
    ours, our_grads = unique_params(params, grads)
    assert len(ours) == 4
    assert all(np.all(g == 1) for g in our_grads)


def test_partially_overlapping_params_are_refused():
    W = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"shapes \(4, 3\) and \(2, 3\) share memory"):
        unique_params([W, W[:2]], [np.zeros((4, 3)), np.zeros((2, 3))])


def test_tied_params_with_shared_gradient_array_are_refused():
    W, g = np.zeros((2, 3)), np.ones((2, 3))
    with pytest.raises(ValueError, match="separate gradient arrays"):
        unique_params([W, W], [g, g])


def test_unique_params_leaves_input_lists_alone():
    W = np.zeros((2, 2))
    params, grads = [W, W], [np.ones((2, 2)), np.ones((2, 2))]
    unique_params(params, grads)
    assert len(params) == 2 and len(grads) == 2


# ---------------------------------------------------------------- clipping


def test_clip_grads_by_hand():
    g1, g2 = np.array([3.0]), np.array([[4.0, 0.0]])
    norm = clip_grads([g1, g2], max_norm=1.0)
    assert norm == 5.0
    np.testing.assert_allclose(g1, [3.0 / (5 + 1e-6)], rtol=1e-15)
    np.testing.assert_allclose(g2, [[4.0 / (5 + 1e-6), 0.0]], rtol=1e-15)


def test_clip_grads_below_threshold_is_untouched():
    g = np.array([0.3, -0.4])
    assert clip_grads([g], max_norm=1.0) == pytest.approx(0.5, rel=1e-15)
    np.testing.assert_array_equal(g, [0.3, -0.4])


def test_clip_grads_matches_torch_and_textbook(dlfs2, rng, torch_module):
    from common.util import clip_grads as book_clip

    grads = [rng.standard_normal(s) * 3 for s in SHAPES]
    tensors = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
    for t, g in zip(tensors, grads):
        t.grad = torch.tensor(g)
    torch_norm = torch.nn.utils.clip_grad_norm_(tensors, max_norm=2.0)
    book = [g.copy() for g in grads]
    book_clip(book, 2.0)
    ours = [g.copy() for g in grads]
    norm = clip_grads(ours, 2.0)
    assert norm == pytest.approx(float(torch_norm), rel=1e-13)
    for o, t, b in zip(ours, tensors, book):
        np.testing.assert_allclose(o, t.grad.numpy(), rtol=1e-12)
        np.testing.assert_allclose(o, b, rtol=1e-12)
    assert grad_norm(ours) == pytest.approx(2.0, rel=1e-6)


def test_grad_norm_float32_overflow_is_rescued():
    # each entry is a finite float32, but its square is not: the norm must still be right
    grads = [np.full(4, 1e30, np.float32), np.array([-1e30], np.float32)]
    assert grad_norm(grads) == pytest.approx(math.sqrt(5) * 1e30, rel=1e-6)
    clip_grads(grads, 1.0)
    assert all(np.all(np.isfinite(g)) for g in grads)
    assert grad_norm(grads) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_clip_grads_non_finite_reports_and_leaves_grads(bad):
    g = np.array([1.0, bad, 2.0])
    norm = clip_grads([g, np.ones(2)], max_norm=1.0)
    assert not math.isfinite(norm)
    assert g[0] == 1.0 and g[2] == 2.0


@pytest.mark.parametrize("max_norm", [0, -1, float("nan"), "big"])
def test_clip_grads_bad_max_norm(max_norm):
    with pytest.raises(ValueError, match="max_norm"):
        clip_grads([np.ones(2)], max_norm)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    scale=st.floats(1e-3, 1e3),
    max_norm=st.floats(0.1, 10.0),
    seed=st.integers(0, 2**16),
)
def test_clip_grads_property(sizes, scale, max_norm, seed):
    r = np.random.default_rng(seed)
    grads = [r.standard_normal(n) * scale for n in sizes]
    before = [g.copy() for g in grads]
    norm = clip_grads(grads, max_norm)
    assert norm == pytest.approx(float(np.linalg.norm(np.concatenate(before))), rel=1e-12)
    assert grad_norm(grads) <= max_norm * (1 + 1e-12)
    factor = min(1.0, max_norm / (norm + 1e-6))  # every gradient is scaled by the same factor
    for g, b in zip(grads, before):
        np.testing.assert_allclose(g, b * factor, rtol=1e-12)


# ---------------------------------------------------------------- schedules


def test_divide_on_plateau_as_the_textbook_loop():
    ppls = [300.0, 200.0, 210.0, 190.0, 190.0, 195.0, 150.0]
    opt = SGD(lr=20.0)
    sched = DivideOnPlateau(opt)
    lrs, improved = [], []
    # the textbook's ch06 train_better_rnnlm.py loop, by hand
    best, lr, book_lrs = float("inf"), 20.0, []
    for ppl in ppls:
        improved.append(sched.step(ppl))
        lrs.append(opt.lr)
        if best > ppl:
            best = ppl
        else:
            lr /= 4.0
        book_lrs.append(lr)
    assert lrs == book_lrs == [20.0, 20.0, 5.0, 5.0, 1.25, 0.3125, 0.3125]
    assert improved == [True, True, False, True, False, False, True]
    assert sched.best == 150.0


@pytest.mark.parametrize("patience, min_lr", [(0, 0.0), (1, 0.0), (2, 0.05)])
def test_divide_on_plateau_matches_torch(rng, patience, min_lr, torch_module):
    metrics = [5.0, 4.0, 4.5, 4.2, 4.1, 3.0, 3.5, 3.6, 3.7, 3.8, 2.0, 2.5, 2.6]
    opt = SGD(lr=1.0)
    sched = DivideOnPlateau(opt, factor=4, patience=patience, min_lr=min_lr)
    t_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    t_sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        t_opt, factor=0.25, patience=patience, threshold=0.0, min_lr=min_lr
    )
    for m in metrics:
        sched.step(m)
        t_sched.step(m)
        assert opt.lr == pytest.approx(t_opt.param_groups[0]["lr"], rel=1e-15)


def test_divide_on_plateau_nan_metric():
    with pytest.raises(ValueError, match="NaN"):
        DivideOnPlateau(SGD()).step(float("nan"))


def test_step_decay_zaremba_small():
    # Zaremba et al. small: lr 1 for 4 epochs, then halved every epoch
    opt = SGD(lr=1.0)
    sched = StepDecay(opt, step_size=1, gamma=0.5, start=4)
    lrs = [opt.lr] + [sched.step() for _ in range(7)]  # lr used in epochs 0..7
    assert lrs == [1.0, 1.0, 1.0, 1.0, 0.5, 0.25, 0.125, 0.0625]


@pytest.mark.parametrize("step_size, gamma", [(1, 0.5), (3, 0.1), (2, 0.8)])
def test_step_decay_matches_torch_step_lr(step_size, gamma, torch_module):
    opt = SGD(lr=0.3)
    sched = StepDecay(opt, step_size=step_size, gamma=gamma)
    t_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    t_sched = torch.optim.lr_scheduler.StepLR(t_opt, step_size=step_size, gamma=gamma)
    for _ in range(10):
        t_opt.step()
        t_sched.step()
        assert sched.step() == pytest.approx(t_opt.param_groups[0]["lr"], rel=1e-12)


def test_cosine_matches_torch_and_then_stays(torch_module):
    opt = SGD(lr=0.5)
    sched = Cosine(opt, total=8, min_lr=0.01)
    t_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    t_sched = torch.optim.lr_scheduler.CosineAnnealingLR(t_opt, T_max=8, eta_min=0.01)
    for n in range(1, 9):
        t_opt.step()
        t_sched.step()
        lr = sched.step()
        assert lr == pytest.approx(t_opt.param_groups[0]["lr"], rel=1e-12)
        assert lr == pytest.approx(0.01 + 0.49 * (1 + math.cos(math.pi * n / 8)) / 2, rel=1e-15)
    assert opt.lr == pytest.approx(0.01, rel=1e-15)
    assert [sched.step() for _ in range(3)] == [opt.lr] * 3 == [sched.min_lr] * 3


@pytest.mark.parametrize(
    "make, drive",
    [
        (lambda o: DivideOnPlateau(o, patience=1), lambda s, i: s.step([5, 4, 4.5, 4.6, 4.7, 3, 3.1, 3.2][i])),
        (lambda o: StepDecay(o, step_size=2, gamma=0.3, start=1), lambda s, i: s.step()),
        (lambda o: Cosine(o, total=5, min_lr=0.001), lambda s, i: s.step()),
    ],
)
def test_schedule_state_round_trip(make, drive):
    def lrs(opt, sched, steps):
        out = []
        for i in steps:
            drive(sched, i)
            out.append(opt.lr)
        return out

    opt = SGD(lr=1.0)
    straight = lrs(opt, make(opt), range(8))

    opt = SGD(lr=1.0)
    sched = make(opt)
    lrs(opt, sched, range(4))
    sched_state, opt_state = through_npz(sched.state_dict()), through_npz(opt.state_dict())
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in sched.state_dict().values())

    opt2 = SGD(lr=7.0)
    sched2 = make(opt2)
    sched2.load_state_dict(sched_state)
    opt2.load_state_dict(opt_state)
    assert lrs(opt2, sched2, range(4, 8)) == straight[4:]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda o: DivideOnPlateau(o, factor=1.0), r"factor must be a finite number in \(1.0, inf\)"),
        (lambda o: DivideOnPlateau(o, patience=1.5), "patience must be an integer >= 0, got 1.5"),
        (lambda o: StepDecay(o, step_size=0), "step_size must be an integer >= 1, got 0"),
        (lambda o: StepDecay(o, step_size=2, start=-1), "start must be an integer >= 0"),
        (lambda o: Cosine(o, total=True), "total must be an integer >= 1, got True"),
        (lambda o: Cosine(o, total=5, min_lr=-1), "min_lr"),
    ],
)
def test_bad_schedule_settings(make, match):
    with pytest.raises(ValueError, match=match):
        make(SGD())


def test_schedule_load_wrong_state():
    with pytest.raises(ValueError, match=r"Cosine: state does not match.*missing \['min_lr', 'total'\]"):
        Cosine(SGD(), total=3).load_state_dict(StepDecay(SGD(), 2).state_dict() | {"count": 1})
