"""What the nprnn.dlfs2 tests share: a float64 gradient check for book-style layers, and the loss
comparison of the chapter-model tests."""

import numpy as np

from nprnn.gradcheck import numerical_gradient, relative_error


def check_layer_gradients(forward, backward, arrays, out_shape, rng, tol=1e-7):
    """Central-difference check of every array in ``arrays`` (float64, perturbed in place).

    ``forward()`` recomputes the output from the arrays; ``backward(dout)`` returns the analytic
    gradients in the order of ``arrays``. The scalar checked is ``sum(forward() * R)`` for a fixed
    random ``R``, so every output element gets its own weight.
    """
    R = rng.standard_normal(out_shape)

    def loss():
        return float(np.sum(forward() * R))

    forward()
    analytic = backward(R)
    assert len(analytic) == len(arrays)
    for i, (a, g) in enumerate(zip(arrays, analytic)):
        assert a.dtype == np.float64
        numeric = numerical_gradient(loss, a)
        err = relative_error(g, numeric)
        assert err < tol, f"array {i} {a.shape}: relative error {err:.2e}"


def check_scalar_loss_gradients(loss_fn, backward, arrays, tol=1e-7):
    """The same for a layer whose forward already returns a scalar loss."""
    loss_fn()
    analytic = backward()
    for i, (a, g) in enumerate(zip(arrays, analytic)):
        numeric = numerical_gradient(lambda: float(loss_fn()), a)
        err = relative_error(g, numeric)
        assert err < tol, f"array {i} {a.shape}: relative error {err:.2e}"
