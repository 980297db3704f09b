"""Optimizers, gradient clipping, tied-weight merging and learning-rate schedules.

The textbook's protocol: ``opt.update(params, grads)`` where ``params`` and ``grads`` are
lists of arrays; the parameter arrays are updated in place (``p -= ...``), so every layer
holding them sees the new values. A training step is::

    params, grads = unique_params(model.params, model.grads)  # tied weights counted once
    clip_grads(grads, max_norm)                              # global-norm clipping, in place
    opt.update(params, grads)

Conventions. Where the textbook's ``common/optimizer.py`` and the published algorithm (as
implemented by ``torch.optim``) agree, there is one formula. Where they differ, the default is
the published algorithm and ``book=True`` reproduces the textbook's code:

==========  ==========================================================  ====================
optimizer   default (``book=False``)                                    ``book=True``
==========  ==========================================================  ====================
Momentum    v = mu v - lr g; p += v  (textbook = Sutskever et al.;       (no flag: same)
            torch keeps buf = mu buf + g, p -= lr buf: equal while lr
            is constant; after an lr change ours keeps the old steps'
            lr inside v, torch rescales the whole buffer)
Nesterov    v = mu v - lr g; p += mu v - lr g  (Bengio et al. 2012      p += mu^2 v - (1+mu) lr g
            eq. 7 = torch ``nesterov=True`` at constant lr)              with the *updated* v: a
                                                                         larger step than eq. 7
AdaGrad     h += g^2; p -= lr g / (sqrt(h) + eps), eps = 1e-10 (torch)  same formula, eps = 1e-7
RMSprop     h = rho h + (1-rho) g^2; p -= lr g / (sqrt(h) + eps),       same formula, eps = 1e-7
            eps = 1e-8 (torch)
Adam        p -= lr/(1-b1^t) m / (sqrt(v)/sqrt(1-b2^t) + eps),          p -= lr_t m / (sqrt(v) + eps),
            eps = 1e-8 (Kingma & Ba Algorithm 1, torch)                  lr_t = lr sqrt(1-b2^t)/(1-b1^t),
                                                                         eps = 1e-7 (the paper's
                                                                         "eps hat" variant)
AdamW       p *= 1 - lr wd, then Adam (torch.optim.AdamW)               --
==========  ==========================================================  ====================

Every optimizer and schedule has ``state_dict()`` (a dict of str -> int, float or ndarray,
storable in an ``.npz`` without pickle) and ``load_state_dict(d)``; loading the dict into a
fresh object continues the run bit for bit.
"""

import math

import numpy as np

from nprnn import accel

# ---------------------------------------------------------------- tied weights


def _tie(a, b):
    """How array ``b`` aliases array ``a``: "same", "transpose" or None (independent memory).

    Decided from memory layout, never from values: two equal but separate arrays are not tied.
    Any other overlap (a slice, a reshaped view) has no well-defined merged gradient.
    """
    if a is b:
        return "same"
    if not np.may_share_memory(a, b):
        return None
    same_start = a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    if same_start and a.dtype == b.dtype:
        if a.shape == b.shape and a.strides == b.strides:
            return "same"
        if a.ndim == 2 and b.shape == a.shape[::-1] and b.strides == a.strides[::-1]:
            return "transpose"
    if np.shares_memory(a, b):
        raise ValueError(
            f"parameters of shapes {a.shape} and {b.shape} share memory but are neither the same array "
            "nor transposes of each other; only those two kinds of weight tying are supported"
        )
    return None


def unique_params(params, grads):
    """Merge tied parameters so each weight appears once, with the sum of its gradients.

    A parameter is tied to an earlier one if it is the same array, a view with the same
    layout, or its 2-D transpose (the language model's output ``W`` = embedding ``W.T``);
    the later gradient (transposed if needed) is added **in place** into the earlier one's
    gradient, as the textbook's ``remove_duplicate`` does. Unlike that function, tying is
    detected from shared memory, not from equal values, so two separately allocated matrices
    that happen to be equal (or a symmetric one and its copy) are never merged.

    Returns new lists ``(params, grads)``; the input lists are not modified.
    """
    _check_lists("unique_params", params, grads)
    kept_p, kept_g = [], []
    for p, g in zip(params, grads):
        for q, gq in zip(kept_p, kept_g):
            tie = _tie(q, p)
            if tie is None:
                continue
            if np.may_share_memory(gq, g):
                raise ValueError(
                    f"unique_params: tied parameters of shapes {q.shape} and {p.shape} must have separate "
                    "gradient arrays (each layer writes its own), but their gradients share memory"
                )
            gq += g if tie == "same" else g.T
            break
        else:
            kept_p.append(p)
            kept_g.append(g)
    return kept_p, kept_g


# ---------------------------------------------------------------- gradient clipping


def grad_norm(grads):
    """Global L2 norm ``sqrt(sum_i ||g_i||^2)`` of a list of arrays, as a Python float.

    Inf or NaN if any gradient entry is. float32 squares that overflow although every entry
    is finite are recomputed in float64 after scaling by the largest entry.
    """
    total = 0.0
    with np.errstate(over="ignore"):  # handled below
        for g in grads:
            flat = g.reshape(-1)
            total += float(np.dot(flat, flat))
    norm = math.sqrt(total)
    if math.isinf(norm) and all(np.isfinite(g).all() for g in grads):
        scale = max(float(np.max(np.abs(g), initial=0.0)) for g in grads)
        total = sum(float(np.sum(np.square(g.astype(np.float64) / scale))) for g in grads)
        norm = scale * math.sqrt(total)
    return norm


def clip_grads(grads, max_norm):
    """Scale all gradients in place so their global norm is at most ``max_norm``.

    As the textbook and ``torch.nn.utils.clip_grad_norm_``: scale by
    ``max_norm / (norm + 1e-6)`` when that is below 1. Returns the norm *before* clipping.
    A non-finite norm (a NaN or Inf gradient) leaves the gradients untouched and is returned
    as is, so the caller can stop training instead of stepping with garbage.
    Call it on the output of ``unique_params`` so a tied weight's gradient counts once.
    """
    max_norm = _number("clip_grads", "max_norm", max_norm, low=0.0, low_open=True)
    if not isinstance(grads, (list, tuple)) or not all(isinstance(g, np.ndarray) for g in grads):
        raise ValueError(f"clip_grads: grads must be a list of NumPy arrays, got {type(grads).__name__}")
    norm = grad_norm(grads)
    rate = clip_rate(norm, max_norm)
    if rate != 1:
        for g in grads:
            g *= rate
    return norm


def clip_rate(norm, max_norm):
    """The factor ``clip_grads`` scales the gradients by, from their global ``norm``: ``max_norm /
    (norm + 1e-6)`` when that is below 1, else 1 (also for a non-finite norm). Passed to
    ``Optimizer.update(..., grad_scale=rate)`` it clips without a pass of its own over the gradients."""
    rate = max_norm / (norm + 1e-6) if math.isfinite(norm) else 1.0
    return rate if rate < 1 else 1.0


# ---------------------------------------------------------------- optimizers


class Optimizer:
    """Base class: argument checks, lazily created per-parameter state, state_dict.

    Subclasses list their scalar settings in ``hyper`` and their per-parameter state arrays
    in ``slots`` (created as zeros like each parameter on the first update) and implement
    ``_update(params, grads)``. ``t`` counts the updates done.
    """

    hyper = ("lr",)
    slots = ()

    def __init__(self, lr):
        self.lr = lr
        self.t = 0
        self.n_params = 0  # fixed by the first update
        self.state = None  # {slot: [array per parameter]}

    @property
    def lr(self):
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = _number(type(self).__name__, "lr", value, low=0.0)

    fuses_grad_scale = False  # whether _update applies self.grad_scale itself (in its fused kernels)

    def update(self, params, grads, grad_scale=1.0):
        """Update every ``params[i]`` in place from ``grads[i]`` (same shape and dtype).

        ``grad_scale``: update as if every gradient were first multiplied by it in place, as
        ``clip_grads`` does (``clip_rate`` gives the factor); the numbers are the same bit for bit,
        but the fused kernels of SGD, momentum and Adam do it without a pass over the gradients,
        which are then left unscaled."""
        name = type(self).__name__
        _check_lists(name, params, grads)
        grad_scale = _number(name, "grad_scale", grad_scale, low=0.0)
        for i, p in enumerate(params):
            if p.dtype not in (np.float32, np.float64):
                raise ValueError(f"{name}: params[{i}] must be float32 or float64, got {p.dtype}")
            if not p.flags.writeable:
                raise ValueError(f"{name}: params[{i}] is read-only; the update is done in place")
            for j in range(i):
                if np.may_share_memory(params[j], p) and np.shares_memory(params[j], p):
                    raise ValueError(
                        f"{name}: params[{j}] and params[{i}] share memory (tied weights) and would be "
                        "updated twice; merge them first with unique_params(params, grads)"
                    )
        if self.state is None:
            self.n_params = len(params)
            self.state = {slot: [np.zeros_like(p) for p in params] for slot in self.slots}
        self._check_state(params)
        self.t += 1
        self.grad_scale = grad_scale
        if grad_scale != 1 and not self.fuses_grad_scale:
            for g in grads:
                g *= grad_scale
        self._update(params, grads)

    def _scaled(self, g):
        """``g`` scaled in place by ``grad_scale``, for the NumPy branch of an optimizer that fuses it."""
        if self.grad_scale != 1:
            g *= self.grad_scale
        return g

    def _check_state(self, params):
        name = type(self).__name__
        if len(params) != self.n_params:
            raise ValueError(
                f"{name}: got {len(params)} parameters, but the optimizer state was built for "
                f"{self.n_params}; an optimizer belongs to one model"
            )
        for slot, arrays in self.state.items():
            for i, (p, s) in enumerate(zip(params, arrays)):
                if s.shape != p.shape or s.dtype != p.dtype:
                    raise ValueError(
                        f"{name}: params[{i}] is {p.dtype} {p.shape}, but the optimizer state {slot!r} "
                        f"for it is {s.dtype} {s.shape}; an optimizer belongs to one model"
                    )

    def _update(self, params, grads):
        raise NotImplementedError

    def state_dict(self):
        """Settings, step count and state arrays (copies): ``{"lr": 0.01, "t": 3, "v.0": array, ...}``."""
        d = {h: _plain(getattr(self, h)) for h in self.hyper}
        d["t"] = self.t
        d["n_params"] = self.n_params
        if self.state is not None:
            for slot, arrays in self.state.items():
                for i, a in enumerate(arrays):
                    d[f"{slot}.{i}"] = a.copy()
        return d

    def load_state_dict(self, d):
        """Restore what ``state_dict`` returned, so the next update equals the uninterrupted run's."""
        name = type(self).__name__
        if not isinstance(d, dict):
            raise ValueError(f"{name}: state must be a dict, got {type(d).__name__}")
        n = _integer(name, d, "n_params")
        expected = {*self.hyper, "t", "n_params"} | {f"{s}.{i}" for s in self.slots for i in range(n)}
        _check_keys(name, d, expected)
        for h in self.hyper:
            setattr(self, h, _scalar_like(name, d, h, getattr(self, h)))
        self.t = _integer(name, d, "t")
        self.n_params = n
        if n == 0:
            self.state = None
            return
        state = {}
        for slot in self.slots:
            arrays = []
            for i in range(n):
                a = d[f"{slot}.{i}"]
                if not isinstance(a, np.ndarray) or a.dtype not in (np.float32, np.float64):
                    raise ValueError(f"{name}: state {slot}.{i} must be a float32/float64 array, got {_describe(a)}")
                arrays.append(np.array(a, copy=True))
            state[slot] = arrays
        self.state = state


class SGD(Optimizer):
    """Plain gradient descent: ``p -= lr g``."""

    def __init__(self, lr=0.01):
        super().__init__(lr)

    fuses_grad_scale = True

    def _update(self, params, grads):
        kernels = accel.kernels()
        for p, g in zip(params, grads):
            if kernels is not None and accel.fusable(p, g):  # one pass, no temporary: the same bits
                kernels.sgd_update(p.reshape(-1), g.reshape(-1), self.lr, self.grad_scale)
                continue
            p -= self.lr * self._scaled(g)


class Momentum(Optimizer):
    """Momentum SGD in the textbook's velocity form: ``v = momentum v - lr g; p += v``."""

    hyper = ("lr", "momentum")
    slots = ("v",)

    def __init__(self, lr=0.01, momentum=0.9):
        super().__init__(lr)
        self.momentum = _number("Momentum", "momentum", momentum, low=0.0, high=1.0)

    fuses_grad_scale = True

    def _update(self, params, grads):
        kernels = accel.kernels()
        for p, g, v in zip(params, grads, self.state["v"]):
            if kernels is not None and accel.fusable(p, g, v):
                flat = (a.reshape(-1) for a in (p, g, v))
                kernels.momentum_update(*flat, self.momentum, self.lr, self.grad_scale)
                continue
            v *= self.momentum
            v -= self.lr * self._scaled(g)
            p += v


class Nesterov(Optimizer):
    """Nesterov momentum; ``book=True`` is the textbook's variant (see the module docstring).

    Default (Bengio et al. 2012, eq. 7): ``v = mu v - lr g; p += mu v - lr g``.
    """

    hyper = ("lr", "momentum", "book")
    slots = ("v",)

    def __init__(self, lr=0.01, momentum=0.9, book=False):
        super().__init__(lr)
        self.momentum = _number("Nesterov", "momentum", momentum, low=0.0, high=1.0)
        self.book = bool(book)

    def _update(self, params, grads):
        mu, lr = self.momentum, self.lr
        for p, g, v in zip(params, grads, self.state["v"]):
            v *= mu
            v -= lr * g
            if self.book:  # mu^2 applied to the already-updated v, as the textbook's code does
                p += mu * mu * v
                p -= (1 + mu) * lr * g
            else:  # = p + mu^2 v_old - (1 + mu) lr g
                p += mu * v - lr * g


class AdaGrad(Optimizer):
    """``h += g^2; p -= lr g / (sqrt(h) + eps)``; eps 1e-10 (torch) or 1e-7 (``book=True``)."""

    hyper = ("lr", "eps", "book")
    slots = ("h",)

    def __init__(self, lr=0.01, eps=None, book=False):
        super().__init__(lr)
        self.book = bool(book)
        self.eps = _number("AdaGrad", "eps", (1e-7 if book else 1e-10) if eps is None else eps, low=0.0)

    def _update(self, params, grads):
        for p, g, h in zip(params, grads, self.state["h"]):
            h += g * g
            p -= self.lr * g / (np.sqrt(h) + self.eps)


class RMSprop(Optimizer):
    """``h = rho h + (1 - rho) g^2; p -= lr g / (sqrt(h) + eps)``; eps 1e-8 (torch) or 1e-7 (``book=True``)."""

    hyper = ("lr", "decay_rate", "eps", "book")
    slots = ("h",)

    def __init__(self, lr=0.01, decay_rate=0.99, eps=None, book=False):
        super().__init__(lr)
        self.decay_rate = _number("RMSprop", "decay_rate", decay_rate, low=0.0, high=1.0)
        self.book = bool(book)
        self.eps = _number("RMSprop", "eps", (1e-7 if book else 1e-8) if eps is None else eps, low=0.0)

    def _update(self, params, grads):
        rho = self.decay_rate
        for p, g, h in zip(params, grads, self.state["h"]):
            h *= rho
            h += (1 - rho) * g * g
            p -= self.lr * g / (np.sqrt(h) + self.eps)


class Adam(Optimizer):
    """Adam with bias correction; ``book=True`` is the textbook's form (see the module docstring).

    ``m, v`` are the running means of ``g`` and ``g^2``; ``t`` the step count.
    """

    hyper = ("lr", "beta1", "beta2", "eps", "book")
    slots = ("m", "v")
    fuses_grad_scale = True

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=None, book=False):
        super().__init__(lr)
        name = type(self).__name__
        self.beta1 = _number(name, "beta1", beta1, low=0.0, high=1.0)
        self.beta2 = _number(name, "beta2", beta2, low=0.0, high=1.0)
        self.book = bool(book)
        self.eps = _number(name, "eps", (1e-7 if book else 1e-8) if eps is None else eps, low=0.0)

    def _update(self, params, grads):
        b1, b2, t = self.beta1, self.beta2, self.t
        bias1, bias2 = 1 - b1**t, 1 - b2**t
        kernels = accel.kernels()
        for p, g, m, v in zip(params, grads, self.state["m"], self.state["v"]):
            if kernels is not None and accel.fusable(p, g, m, v):  # one fused pass instead of ten NumPy operations
                step = self.lr * math.sqrt(bias2) / bias1 if self.book else self.lr / bias1
                flat = (a.reshape(-1) for a in (p, g, m, v))
                kernels.adam_update(*flat, b1, b2, step, math.sqrt(bias2), self.eps, self.book, self.grad_scale)
                continue
            g = self._scaled(g)
            m += (1 - b1) * (g - m)
            if self.book:
                v += (1 - b2) * (g**2 - v)
                lr_t = self.lr * math.sqrt(bias2) / bias1  # eps is added before the bias correction
                p -= lr_t * m / (np.sqrt(v) + self.eps)
            else:
                v *= b2
                v += (1 - b2) * g * g
                p -= (self.lr / bias1) * m / (np.sqrt(v) / math.sqrt(bias2) + self.eps)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter; as ``torch.optim.AdamW``).

    Before the Adam step every parameter shrinks: ``p *= 1 - lr * weight_decay`` (biases and
    embeddings included; pass only the arrays you want decayed to a separate optimizer otherwise).
    """

    hyper = ("lr", "beta1", "beta2", "eps", "weight_decay")

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
        super().__init__(lr, beta1, beta2, eps)
        self.weight_decay = _number("AdamW", "weight_decay", weight_decay, low=0.0)

    def _update(self, params, grads):
        shrink = 1 - self.lr * self.weight_decay
        for p in params:
            p *= shrink
        super()._update(params, grads)


# ---------------------------------------------------------------- learning-rate schedules


class _Schedule:
    """A schedule owns ``optimizer.lr``: each ``step`` sets it. ``fields`` are its saved state."""

    fields = ()

    def state_dict(self):
        return {f: _plain(getattr(self, f)) for f in self.fields}

    def load_state_dict(self, d):
        """Restore the schedule's counters. The optimizer's own state carries its current lr."""
        name = type(self).__name__
        if not isinstance(d, dict):
            raise ValueError(f"{name}: state must be a dict, got {type(d).__name__}")
        _check_keys(name, d, set(self.fields))
        for f in self.fields:
            setattr(self, f, _scalar_like(name, d, f, getattr(self, f)))


class DivideOnPlateau(_Schedule):
    """The textbook's schedule: divide lr by ``factor`` when the validation metric stops improving.

    ``improved = sched.step(valid_ppl)`` once per epoch: the metric improves if it is below the
    best so far (the first one always does). After more than ``patience`` steps in a row
    without improvement (textbook: 0, i.e. at once) lr becomes ``max(lr / factor, min_lr)``.
    Returns whether the metric improved, i.e. whether to keep this model as the best.
    """

    fields = ("factor", "patience", "min_lr", "best", "has_best", "bad_steps")

    def __init__(self, optimizer, factor=4.0, patience=0, min_lr=0.0):
        self.optimizer = optimizer
        self.factor = _number("DivideOnPlateau", "factor", factor, low=1.0, low_open=True)
        self.patience = _count("DivideOnPlateau", "patience", patience, low=0)
        self.min_lr = _number("DivideOnPlateau", "min_lr", min_lr, low=0.0)
        self.best = 0.0  # meaningless until has_best: kept finite so a checkpoint never holds inf
        self.has_best = False
        self.bad_steps = 0

    def step(self, metric):
        metric = float(metric)
        if math.isnan(metric):
            raise ValueError("DivideOnPlateau: the validation metric is NaN")
        if not self.has_best or metric < self.best:
            self.best, self.has_best, self.bad_steps = metric, True, 0
            return True
        self.bad_steps += 1
        if self.bad_steps > self.patience:
            self.optimizer.lr = max(self.optimizer.lr / self.factor, self.min_lr)
            self.bad_steps = 0
        return False


class StepDecay(_Schedule):
    """Multiply lr by ``gamma`` at step ``start`` and every ``step_size`` steps after it.

    After ``n`` calls of ``step()``: ``lr = base_lr * gamma ** k`` with ``k = 0`` for ``n < start``
    and ``k = (n - start) // step_size + 1`` otherwise. ``start`` defaults to ``step_size``
    (``torch.optim.lr_scheduler.StepLR``); Zaremba et al.'s small model is
    ``StepDecay(opt, step_size=1, gamma=0.5, start=4)`` stepped once per epoch.
    """

    fields = ("base_lr", "step_size", "gamma", "start", "count")

    def __init__(self, optimizer, step_size, gamma=0.5, start=None):
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.step_size = _count("StepDecay", "step_size", step_size, low=1)
        self.gamma = _number("StepDecay", "gamma", gamma, low=0.0)
        self.start = self.step_size if start is None else _count("StepDecay", "start", start, low=0)
        self.count = 0

    def step(self):
        self.count += 1
        k = 0 if self.count < self.start else (self.count - self.start) // self.step_size + 1
        self.optimizer.lr = self.base_lr * self.gamma**k
        return self.optimizer.lr


def cosine_lr(base_lr, n, total, min_lr=0.0):
    """``min_lr + (base_lr - min_lr) (1 + cos(pi n / total)) / 2``, staying at ``min_lr`` once ``n >= total``."""
    progress = min(n, total) / total
    return min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * progress)) / 2


class Cosine(_Schedule):
    """Cosine annealing from the optimizer's lr down to ``min_lr`` over ``total`` steps.

    After ``n`` calls of ``step()``: ``lr = cosine_lr(base_lr, n, total, min_lr)``.
    """

    fields = ("base_lr", "total", "min_lr", "count")

    def __init__(self, optimizer, total, min_lr=0.0):
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.total = _count("Cosine", "total", total, low=1)
        self.min_lr = _number("Cosine", "min_lr", min_lr, low=0.0)
        self.count = 0

    def step(self):
        self.count += 1
        self.optimizer.lr = cosine_lr(self.base_lr, self.count, self.total, self.min_lr)
        return self.optimizer.lr


# ---------------------------------------------------------------- helpers


def _check_lists(name, params, grads):
    for what, arrays in (("params", params), ("grads", grads)):
        if not isinstance(arrays, (list, tuple)):
            raise ValueError(f"{name}: {what} must be a list of NumPy arrays, got {type(arrays).__name__}")
    if len(params) != len(grads):
        raise ValueError(f"{name}: got {len(params)} params but {len(grads)} grads")
    for i, (p, g) in enumerate(zip(params, grads)):
        if not isinstance(p, np.ndarray) or not isinstance(g, np.ndarray):
            raise ValueError(
                f"{name}: params[{i}] and grads[{i}] must be NumPy arrays, got {_describe(p)} and {_describe(g)}"
            )
        if p.shape != g.shape or p.dtype != g.dtype:
            raise ValueError(
                f"{name}: grads[{i}] must match params[{i}] ({p.dtype} {p.shape}), got {g.dtype} {g.shape}"
            )


def _number(name, what, value, low=None, high=None, low_open=False):
    """A finite real in [low, high) (or (low, high) with low_open), as a Python float."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {what} must be a number, got {value!r}") from None
    bad = not math.isfinite(x) or (low is not None and (x <= low if low_open else x < low))
    bad = bad or (high is not None and x >= high)
    if bad:
        lo = "any" if low is None else ("(" if low_open else "[") + str(low)
        hi = "inf)" if high is None else f"{high})"
        raise ValueError(f"{name}: {what} must be a finite number in {lo}, {hi}, got {value!r}")
    return x


def _count(name, what, value, low):
    """An integer >= low (bools refused), as a Python int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}: {what} must be an integer >= {low}, got {value!r}")
    return int(value)


def _plain(value):
    """int for bools and ints, float for reals: the only scalars a state dict holds."""
    if isinstance(value, (bool, int, np.integer, np.bool_)):
        return int(value)
    return float(value)


def _scalar_like(name, d, key, current):
    """``d[key]`` (a number or 0-d array, e.g. from an .npz) converted to the type of ``current``."""
    value = d[key]
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if not isinstance(value, (int, float, np.integer, np.floating, np.bool_)):
        raise ValueError(f"{name}: state {key!r} must be a number, got {_describe(value)}")
    if isinstance(current, bool):
        return bool(value)
    if isinstance(current, int):
        if value != int(value):
            raise ValueError(f"{name}: state {key!r} must be an integer, got {value!r}")
        return int(value)
    return float(value)


def _integer(name, d, key):
    if key not in d:
        raise ValueError(f"{name}: state has no {key!r} entry")
    n = _scalar_like(name, d, key, 0)
    if n < 0:
        raise ValueError(f"{name}: state {key!r} must be >= 0, got {n}")
    return n


def _check_keys(name, d, expected):
    missing, unexpected = expected - d.keys(), d.keys() - expected
    if missing or unexpected:
        raise ValueError(
            f"{name}: state does not match this optimizer/schedule: "
            f"missing {sorted(missing) or 'nothing'}, unexpected {sorted(unexpected) or 'nothing'}"
        )


def _describe(x):
    return f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
