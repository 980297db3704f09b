"""The textbook's ``common/trainer.py``: ``Trainer``, ``RnnlmTrainer`` (``fit``, ``plot``) and
``remove_duplicate``.

The same loops, printed lines, random draws and lists (``loss_list``, ``ppl_list``) as the book's:
``Trainer.fit`` shuffles with ``numpy.random.permutation`` each epoch, ``RnnlmTrainer`` reads
``batch_size`` parallel streams of the corpus ``time_size`` steps at a time. What is faster: a batch is
one fancy-indexing operation instead of ``batch_size * time_size`` Python assignments; ``remove_duplicate``
recognises a tied weight from shared memory (the book's ``W.T`` views) before comparing any values, and
compares values only for 2-D pairs of transposed shapes that do not share memory, stopping at the first
difference it can see cheaply; matplotlib is imported only when ``plot`` is called.
"""

import time

import numpy

from nprnn import accel
from nprnn.dlfs2.np import np
from nprnn.dlfs2.util import clip_grads

__all__ = ["Trainer", "RnnlmTrainer", "remove_duplicate"]


class Trainer:
    """Mini-batch training of a model whose ``forward(x, t)`` returns the loss (chapters 7-8)."""

    def __init__(self, model, optimizer):
        self.model = model
        self.optimizer = optimizer
        self.loss_list = []
        self.eval_interval = None
        self.current_epoch = 0

    def fit(self, x, t, max_epoch=10, batch_size=32, max_grad=None, eval_interval=20):
        accel.retain_freed_memory()  # each iteration's large arrays are reused, not page-faulted afresh
        data_size = len(x)
        max_iters = data_size // batch_size
        self.eval_interval = eval_interval
        model, optimizer = self.model, self.optimizer
        total_loss = 0
        loss_count = 0

        start_time = time.time()
        for _ in range(max_epoch):
            idx = numpy.random.permutation(numpy.arange(data_size))  # noqa: NPY002 (the book's shuffle, same draws)
            x = x[idx]
            t = t[idx]

            for iters in range(max_iters):
                batch_x = x[iters * batch_size : (iters + 1) * batch_size]
                batch_t = t[iters * batch_size : (iters + 1) * batch_size]

                total_loss += _train_step(model, optimizer, batch_x, batch_t, max_grad)
                loss_count += 1

                if (eval_interval is not None) and (iters % eval_interval) == 0:
                    avg_loss = total_loss / loss_count
                    elapsed_time = time.time() - start_time
                    print(
                        f"| epoch {self.current_epoch + 1} |  iter {iters + 1} / {max_iters} "
                        f"| time {int(elapsed_time)}[s] | loss {avg_loss:.2f}"
                    )
                    self.loss_list.append(float(avg_loss))
                    total_loss, loss_count = 0, 0

            self.current_epoch += 1

    def plot(self, ylim=None):
        _plot(self.loss_list, self.eval_interval, "loss", ylim)


class RnnlmTrainer:
    """Truncated-BPTT training of a language model on one long corpus (chapters 5-6)."""

    def __init__(self, model, optimizer):
        self.model = model
        self.optimizer = optimizer
        self.time_idx = None
        self.ppl_list = None
        self.eval_interval = None
        self.current_epoch = 0

    def get_batch(self, x, t, batch_size, time_size):
        """The next ``(batch_size, time_size)`` int32 blocks of inputs and targets: stream ``i`` reads from
        offset ``i * (len(x) // batch_size)``, all streams advancing ``time_size`` steps per call."""
        x, t = np.asarray(x), np.asarray(t)
        data_size = len(x)
        jump = data_size // batch_size
        positions = np.arange(batch_size)[:, None] * jump + (self.time_idx + np.arange(time_size))[None, :]
        positions %= data_size
        self.time_idx += time_size
        return x[positions].astype("i"), t[positions].astype("i")

    def fit(self, xs, ts, max_epoch=10, batch_size=20, time_size=35, max_grad=None, eval_interval=20):
        accel.retain_freed_memory()
        data_size = len(xs)
        max_iters = data_size // (batch_size * time_size)
        self.time_idx = 0
        self.ppl_list = []
        self.eval_interval = eval_interval
        model, optimizer = self.model, self.optimizer
        total_loss = 0
        loss_count = 0
        xs, ts = np.asarray(xs), np.asarray(ts)

        start_time = time.time()
        for _ in range(max_epoch):
            for iters in range(max_iters):
                batch_x, batch_t = self.get_batch(xs, ts, batch_size, time_size)

                total_loss += _train_step(model, optimizer, batch_x, batch_t, max_grad)
                loss_count += 1

                if (eval_interval is not None) and (iters % eval_interval) == 0:
                    ppl = np.exp(total_loss / loss_count)
                    elapsed_time = time.time() - start_time
                    print(
                        f"| epoch {self.current_epoch + 1} |  iter {iters + 1} / {max_iters} "
                        f"| time {int(elapsed_time)}[s] | perplexity {ppl:.2f}"
                    )
                    self.ppl_list.append(float(ppl))
                    total_loss, loss_count = 0, 0

            self.current_epoch += 1

    def plot(self, ylim=None):
        _plot(self.ppl_list, self.eval_interval, "perplexity", ylim)


def _train_step(model, optimizer, batch_x, batch_t, max_grad):
    """One update of both trainers: forward, backward, tied weights once, clipping, the optimizer."""
    loss = model.forward(batch_x, batch_t)
    model.backward()
    params, grads = remove_duplicate(model.params, model.grads)
    if max_grad is not None:
        clip_grads(grads, max_grad)
    optimizer.update(params, grads)
    return loss


def _plot(values, eval_interval, ylabel, ylim):
    """The book's training curve: one point per ``eval_interval`` iterations, shown with pyplot."""
    import matplotlib.pyplot as plt

    if ylim is not None:
        plt.ylim(*ylim)
    plt.plot(numpy.arange(len(values)), values, label="train")
    plt.xlabel("iterations (x" + str(eval_interval) + ")")
    plt.ylabel(ylabel)
    plt.show()


def _is_transpose_view(a, b):
    """``b`` is ``a.T`` in memory (the book's weight tying ``TimeAffine(embed_W.T, ...)``)."""
    ia, ib = a.__array_interface__, b.__array_interface__
    return ia["data"][0] == ib["data"][0] and a.dtype == b.dtype and b.strides == a.strides[::-1]


def _transposed_equal(a, b):
    """``np.all(a.T == b)`` for 2-D ``a``, ``b`` with ``a.T.shape == b.shape``; cheap when they differ."""
    if a.size and not a[0, 0] == b[0, 0]:  # almost every unrelated pair stops here (NaN too, as in the book)
        return False
    if _is_transpose_view(a, b):
        return True  # the same numbers by construction (the book's value test differs only if they hold NaN)
    return bool(numpy.array_equal(a.T, b))


def remove_duplicate(params, grads):
    """Copies of the lists with every shared weight once and its gradients summed into the first one's
    gradient (in place), as the book's: a weight appearing twice (``is``), or a 2-D weight equal to the
    transpose of another (the tied embedding and output weights), the latter's gradient transposed."""
    params, grads = params[:], grads[:]
    while True:
        found = False
        L = len(params)
        for i in range(L - 1):
            for j in range(i + 1, L):
                a, b = params[i], params[j]
                if a is b:
                    grads[i] += grads[j]
                    found = True
                elif a.ndim == 2 and b.ndim == 2 and a.shape[::-1] == b.shape and _transposed_equal(a, b):
                    grads[i] += grads[j].T
                    found = True
                if found:
                    params.pop(j)
                    grads.pop(j)
                    break
            if found:
                break
        if not found:
            return params, grads
