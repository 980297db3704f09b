"""The textbook's ``common/util.py``: corpus helpers, word-vector helpers, gradient clipping, evaluation.

``preprocess``, ``cos_similarity``, ``most_similar``, ``convert_one_hot``, ``create_co_matrix``, ``ppmi``,
``create_contexts_target``, ``to_cpu``, ``to_gpu``, ``clip_grads``, ``eval_perplexity``, ``eval_seq2seq``,
``analogy``, ``normalize``: the book's signatures, printed output and results. The book's element-by-element
Python loops (co-occurrence counts, PPMI, one-hot, contexts, the perplexity batches, similarities) are single
array operations here, with the same values and dtypes.
"""

import inspect
import os
import sys

import numpy

from nprnn.dlfs2.np import np

__all__ = [
    "preprocess", "cos_similarity", "most_similar", "convert_one_hot", "create_co_matrix", "ppmi",
    "create_contexts_target", "to_cpu", "to_gpu", "clip_grads", "eval_perplexity", "eval_seq2seq",
    "analogy", "normalize",
]  # fmt: skip


def preprocess(text):
    """``(corpus, word_to_id, id_to_word)`` of a text: lower-cased, ``.`` split off, split on spaces,
    ids in order of first appearance."""
    words = text.lower().replace(".", " .").split(" ")
    word_to_id, id_to_word = {}, {}
    for word in words:
        if word not in word_to_id:
            new_id = len(word_to_id)
            word_to_id[word] = new_id
            id_to_word[new_id] = word
    corpus = np.array([word_to_id[w] for w in words])
    return corpus, word_to_id, id_to_word


def cos_similarity(x, y, eps=1e-8):
    """Cosine similarity of two vectors, ``eps`` keeping a zero vector from dividing by 0."""
    nx = x / (np.sqrt(np.sum(x**2)) + eps)
    ny = y / (np.sqrt(np.sum(y**2)) + eps)
    return np.dot(nx, ny)


def _similarities(word_matrix, query_vec, eps=1e-8):
    """``cos_similarity(word_matrix[i], query_vec)`` for every row at once."""
    rows = word_matrix / (np.sqrt(np.sum(word_matrix**2, axis=1, keepdims=True)) + eps)
    return rows @ (query_vec / (np.sqrt(np.sum(query_vec**2)) + eps))


def most_similar(query, word_to_id, id_to_word, word_matrix, top=5):
    """Print the ``top`` words most similar (cosine) to ``query``, as the book does."""
    if query not in word_to_id:
        print(f"{query} is not found")
        return
    print("\n[query] " + query)
    query_vec = word_matrix[word_to_id[query]]
    vocab_size = len(id_to_word)
    similarity = numpy.zeros(vocab_size)
    similarity[:] = _similarities(word_matrix[:vocab_size], query_vec)
    count = 0
    for i in (-1 * similarity).argsort():
        if id_to_word[i] == query:
            continue
        print(f" {id_to_word[i]}: {similarity[i]}")
        count += 1
        if count >= top:
            return


def convert_one_hot(corpus, vocab_size):
    """One-hot int32 rows of a 1-D or 2-D array of ids: ``(N, V)`` or ``(N, C, V)``."""
    corpus = np.asarray(corpus)
    if corpus.ndim not in (1, 2):
        raise ValueError(f"convert_one_hot: corpus must be 1-D or 2-D, got shape {corpus.shape}")
    one_hot = np.zeros((*corpus.shape, vocab_size), dtype=np.int32)
    np.put_along_axis(one_hot, corpus[..., None], 1, axis=-1)
    return one_hot


def create_co_matrix(corpus, vocab_size, window_size=1):
    """The int32 co-occurrence matrix: ``C[w, c]`` counts ``c`` within ``window_size`` words of ``w``."""
    corpus = np.asarray(corpus).reshape(-1).astype(np.intp)
    counts = np.zeros(vocab_size * vocab_size, dtype=np.int64)
    for i in range(1, window_size + 1):
        if i >= len(corpus):
            break
        left, right = corpus[:-i], corpus[i:]  # left[k] and right[k] are i words apart
        counts += np.bincount(right * vocab_size + left, minlength=vocab_size * vocab_size)
        counts += np.bincount(left * vocab_size + right, minlength=vocab_size * vocab_size)
    return counts.reshape(vocab_size, vocab_size).astype(np.int32)


def ppmi(C, verbose=False, eps=1e-8):
    """Positive pointwise mutual information of a co-occurrence matrix, float32:
    ``max(0, log2(C[i, j] N / (S[j] S[i]) + eps))``. ``verbose`` prints the book's progress lines."""
    N = np.sum(C)
    S = np.sum(C, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log2(C * N / (S[None, :] * S[:, None]) + eps)
    M = np.where(pmi > 0, pmi, 0).astype(np.float32)  # max(0, pmi): 0 for nan too, as Python's max
    if verbose:
        total = C.shape[0] * C.shape[1]
        step = total // 100 + 1
        for cnt in range(step, total + 1, step):
            print(f"{100 * cnt / total:.1f}% done")
    return M


def create_contexts_target(corpus, window_size=1):
    """``(contexts: (n, 2 window_size), target: (n,))``: each word and the words around it."""
    corpus = np.asarray(corpus)
    target = corpus[window_size:-window_size]
    n = len(corpus) - 2 * window_size
    offsets = [t for t in range(-window_size, window_size + 1) if t != 0]
    if n <= 0:
        return np.array([]), np.array(target)
    positions = np.arange(window_size, window_size + n)[:, None] + np.array(offsets)[None, :]
    return corpus[positions], np.array(target)


def to_cpu(x):
    """``x`` as a NumPy array (a CuPy array is copied to the host)."""
    if type(x) is numpy.ndarray:
        return x
    if hasattr(x, "get"):  # cupy.ndarray
        return x.get()
    return numpy.asarray(x)


def to_gpu(x):
    """``x`` as a CuPy array (needs CuPy)."""
    import cupy

    if type(x) is cupy.ndarray:
        return x
    return cupy.asarray(x)


def clip_grads(grads, max_norm):
    """Scale the gradients in place so their global L2 norm is at most ``max_norm``, as the book does:
    by ``max_norm / (norm + 1e-6)`` when that is below 1."""
    total = 0.0
    for grad in grads:
        flat = grad.reshape(-1)
        total += float(np.dot(flat, flat))  # no grad ** 2 temporary
    rate = max_norm / (np.sqrt(total) + 1e-6)
    if rate < 1:
        for grad in grads:
            grad *= rate


def _accepts_train_flg(model):
    try:
        inspect.signature(model.forward).bind(None, None, train_flg=False)
    except TypeError:
        return False
    except ValueError:  # no signature (a builtin): try it, as the book does
        return None
    return True


def eval_perplexity(model, corpus, batch_size=10, time_size=35):
    """The perplexity of a language model on ``corpus``, read as ``batch_size`` streams of ``time_size``
    steps at a time, as the book reads it (``model.forward(xs, ts, train_flg=False)`` if it takes that)."""
    print("evaluating perplexity ...")
    corpus = np.asarray(corpus)
    corpus_size = len(corpus)
    total_loss = 0
    max_iters = (corpus_size - 1) // (batch_size * time_size)
    jump = (corpus_size - 1) // batch_size
    starts = np.arange(batch_size)[:, None] * jump + np.arange(time_size)[None, :]
    train_flg = _accepts_train_flg(model)
    for iters in range(max_iters):
        positions = starts + iters * time_size
        xs = corpus[positions % corpus_size].astype(np.int32)
        ts = corpus[(positions + 1) % corpus_size].astype(np.int32)
        if train_flg:
            loss = model.forward(xs, ts, train_flg=False)
        elif train_flg is None:
            try:
                loss = model.forward(xs, ts, train_flg=False)
            except TypeError:
                loss = model.forward(xs, ts)
        else:
            loss = model.forward(xs, ts)
        total_loss += loss
        sys.stdout.write(f"\r{iters} / {max_iters}")
        sys.stdout.flush()
    print("")
    return np.exp(total_loss / max_iters)


def eval_seq2seq(model, question, correct, id_to_char, verbose=False, is_reverse=False):
    """1 if ``model.generate`` answers ``question`` exactly with ``correct`` (after its start symbol), else 0;
    ``verbose`` prints the question, the answer and the guess as the book does."""
    correct = correct.flatten()
    start_id = correct[0]  # the separator the answer starts with
    correct = correct[1:]
    guess = model.generate(question, start_id, len(correct))

    question = "".join([id_to_char[int(c)] for c in question.flatten()])
    correct = "".join([id_to_char[int(c)] for c in correct])
    guess = "".join([id_to_char[int(c)] for c in guess])

    if verbose:
        if is_reverse:
            question = question[::-1]
        colors = {"ok": "\033[92m", "fail": "\033[91m", "close": "\033[0m"}
        print("Q", question)
        print("T", correct)
        is_windows = os.name == "nt"
        if correct == guess:
            mark = "O" if is_windows else colors["ok"] + "☑" + colors["close"]
        else:
            mark = "X" if is_windows else colors["fail"] + "☒" + colors["close"]
        print(mark + " " + guess)
        print("---")
    return 1 if guess == correct else 0


def analogy(a, b, c, word_to_id, id_to_word, word_matrix, top=5, answer=None):
    """Print the words closest to ``b - a + c`` (a : b = c : ?), as the book does."""
    for word in (a, b, c):
        if word not in word_to_id:
            print(f"{word} is not found")
            return
    print("\n[analogy] " + a + ":" + b + " = " + c + ":?")
    a_vec, b_vec, c_vec = word_matrix[word_to_id[a]], word_matrix[word_to_id[b]], word_matrix[word_to_id[c]]
    query_vec = normalize(b_vec - a_vec + c_vec)
    similarity = np.dot(word_matrix, query_vec)
    if answer is not None:
        print("==>" + answer + ":" + str(np.dot(word_matrix[word_to_id[answer]], query_vec)))
    count = 0
    for i in (-1 * similarity).argsort():
        if np.isnan(similarity[i]):
            continue
        if id_to_word[i] in (a, b, c):
            continue
        print(f" {id_to_word[i]}: {similarity[i]}")
        count += 1
        if count >= top:
            return


def normalize(x):
    """Scale ``x`` (a vector, or each row of a matrix) to unit length, in place; returns it."""
    if x.ndim == 2:
        s = np.sqrt((x * x).sum(1))
        x /= s.reshape((s.shape[0], 1))
    elif x.ndim == 1:
        s = np.sqrt((x * x).sum())
        x /= s
    return x
