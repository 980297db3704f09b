"""Data-parallel training over MPI (mpi4py): K processes, one model replica each, one batch between them.

    mpiexec -n K nprnn train ...
    mpiexec -n K nprnn seq2seq train ...

Every rank holds the same parameters and optimizer state. Of each global batch ``(N, T)`` rank ``r``
takes the contiguous rows ``shard_rows(N, r, K)`` (``n_r`` of them; sizes differ by at most one),
runs forward and backward on them, and then the ranks add up their gradients in ONE ``Allreduce`` on
one preallocated flat buffer::

    buffer = [ w_r * grad_0 | w_r * grad_1 | ... | w_r * loss_r | stop_r ]   with  w_r = n_r / N

Each rank's loss (and so its gradient) is a mean over its own ``n_r * T`` positions, and the
full-batch loss is the mean over all ``N * T``, i.e. ``sum_r (n_r / N) * loss_r``: the sum of the
weighted buffers is exactly the full-batch gradient in exact arithmetic, and equals the one-process
result up to float rounding even when N is not a multiple of K. After the Allreduce every rank
holds the same numbers, so clipping and the optimizer step give the same parameters everywhere;
``check_in_sync`` verifies that at every checkpoint. The last two slots carry the batch loss for
the log and "some rank got Ctrl-C", so all ranks stop at the same step without another message.

The recurrent state carried between batches belongs to the rows: each rank carries the state of
its rows. A checkpoint gathers the full ``(L, N, H)`` state on rank 0, which writes the same file a
single process would; on resume each rank takes its rows back.

Dropout: rank ``r``'s dropout generators are those of the seed jumped ``r`` times
(``PCG64.jumped``), so ranks draw independent masks; rank 0 keeps the seed's own stream. Masks are
drawn per rank for ``(n_r, T, ...)`` arrays, so with dropout a K-rank run differs from a
one-process run (deterministic for a given K and seed, and resumed exactly with the same K); with
dropout 0 it matches the one-process run to rounding.

mpi4py is optional: ``mpi_world()`` imports it only when an MPI launcher's environment says more
than one process was started, so the single-process path never needs it.
"""

import hashlib
import os
import sys
import time
from contextlib import contextmanager

import numpy as np

from nprnn.checkpoint import set_rng_state
from nprnn.data.batching import shard_rows

# What MPI launchers put in each process's environment: Open MPI's mpirun, MPICH/Intel MPI's
# hydra (and Slurm's srun with PMI-2), PMIx launchers, MVAPICH2.
LAUNCHER_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE")

INSTALL_HINT = 'pip install "nprnn[mpi]" mpich  (or Debian: apt-get install python3-mpi4py mpich)'


def launcher_world_size(environ=None):
    """Number of processes an MPI launcher says it started (from ``environ``, default
    ``os.environ``), or None when this process was not started by one."""
    environ = os.environ if environ is None else environ
    for name in LAUNCHER_SIZE_VARS:
        value = environ.get(name)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"{name} must be an integer (set by the MPI launcher), got {value!r}") from None
    return None


def mpi_world(environ=None):
    """``MPI.COMM_WORLD`` when this process is one of K > 1 started by an MPI launcher, else None.

    mpi4py is imported only in that case. Raises RuntimeError when the launcher started K > 1
    processes but mpi4py is missing, or when its MPI library is not the launcher's (each process
    would then be a world of its own and K copies would train side by side)."""
    size = launcher_world_size(environ)
    if size is None or size < 2:
        return None
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise RuntimeError(f"started by an MPI launcher with {size} processes, but mpi4py is missing ({e}); "
                           f"install it with: {INSTALL_HINT}") from None  # fmt: skip
    comm = MPI.COMM_WORLD
    if comm.Get_size() != size:
        library = MPI.Get_library_version().splitlines()[0].strip()
        raise RuntimeError(
            f"the MPI launcher started {size} processes but MPI.COMM_WORLD has {comm.Get_size()}: mpi4py uses "
            f"{library!r}, which is not the launcher's MPI; run the mpiexec that comes with it"
        )
    return comm


@contextmanager
def abort_on_error(comm):
    """Turn an exception on one rank into ``MPI_Abort`` of the whole job: otherwise the other ranks
    would wait forever in their next collective. KeyboardInterrupt passes through: all ranks agree
    on it (``DataParallel.allreduce_step``) and raise it at the same step."""
    try:
        yield
    except KeyboardInterrupt:
        raise
    except Exception as e:
        print(f"nprnn: error on rank {comm.Get_rank()}: {e}", file=sys.stderr, flush=True)
        comm.Abort(2)
        raise  # only reached with a communicator whose Abort returns


def _digest(arrays):
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(np.ascontiguousarray(a).view(np.uint8).data)
    return h.hexdigest()


class DataParallel:
    """The MPI side of data-parallel training (``nprnn.training.loop.TrainingLoop``): which rows this
    rank trains on, the per-step gradient Allreduce, the validation-loss sum, and gathering/scattering
    checkpoint state.

    ``comm``: an mpi4py communicator (``mpi_world()``); ``model``: the ``LanguageModel`` (or seq2seq
    model: any ``params``/``grads`` model) replica of this rank, with the same parameters on every
    rank (checked here); ``batch_size``: the global N.
    Attaching jumps this rank's dropout generators (see the module docstring).
    ``allreduce_seconds`` / ``allreduce_calls`` count the time spent in the step's Allreduce,
    including any wait for a slower rank.
    """

    def __init__(self, comm, model, batch_size):
        from mpi4py import MPI

        self._in_place = MPI.IN_PLACE
        self.comm, self.rank, self.size = comm, comm.Get_rank(), comm.Get_size()
        self.model = model
        self.rows = self.shard(batch_size)
        self.weight = self.share(batch_size)
        # grads, then the weighted loss and the stop flag; allocated once, reused every step
        self.buffer = np.empty(sum(g.size for g in model.grads) + 2, dtype=model.grads[0].dtype)
        self.allreduce_seconds, self.allreduce_calls = 0.0, 0
        self.signalled = False  # set by the loop's SIGINT handler, at any moment; never cleared
        self.check_in_sync("at start")
        if self.rank:
            for rng in model.dropout_rngs() if hasattr(model, "dropout_rngs") else []:  # seq2seq models draw none
                rng.bit_generator.state = rng.bit_generator.jumped(self.rank).state

    @property
    def is_root(self):
        return self.rank == 0

    def shard(self, batch_size):
        """This rank's rows of a batch of ``batch_size`` rows (a slice)."""
        if batch_size < self.size:
            raise ValueError(
                f"{self.size} MPI ranks need batches of at least {self.size} rows (one per rank), got a batch "
                f"of {batch_size}; use a larger --batch-size/--eval-batch-size or fewer ranks"
            )
        return shard_rows(batch_size, self.rank, self.size)

    def share(self, batch_size):
        """This rank's fraction ``n_r / N`` of the rows: the weight of its batch-mean loss."""
        rows = self.shard(batch_size)
        return (rows.stop - rows.start) / batch_size

    def allreduce_step(self, grads, loss):
        """Replace this rank's ``grads`` (in place) by the full-batch gradients; returns the
        full-batch ``loss`` and whether any rank had been ``signalled`` (Ctrl-C) when it packed its
        buffer. One Allreduce. A signal that lands later, even during the Allreduce, stays in
        ``signalled`` for the next step: acting on it now would stop this rank alone."""
        buf, w, offset = self.buffer, self.weight, 0
        for g in grads:
            np.multiply(g, w, out=buf[offset : offset + g.size].reshape(g.shape))
            offset += g.size
        buf[offset], buf[offset + 1] = w * loss, float(self.signalled)
        start = time.perf_counter()
        self.comm.Allreduce(self._in_place, buf)
        self.allreduce_seconds += time.perf_counter() - start
        self.allreduce_calls += 1
        offset = 0
        for g in grads:
            g[...] = buf[offset : offset + g.size].reshape(g.shape)
            offset += g.size
        return float(buf[offset]), bool(buf[offset + 1] > 0)

    def sum(self, value):
        """The sum over ranks of a float (e.g. weighted validation losses), on every rank."""
        total = np.array([value], dtype=np.float64)
        self.comm.Allreduce(self._in_place, total)
        return float(total[0])

    def check_in_sync(self, when):
        """Raise RuntimeError on every rank if the ranks' parameters are not bit for bit equal."""
        digests = self.comm.allgather(_digest(self.model.params))
        if len(set(digests)) > 1:
            differ = [r for r, d in enumerate(digests) if d != digests[0]]
            raise RuntimeError(
                f"data-parallel ranks {differ} hold parameters different from rank 0's {when}; "
                "the replicas must start from the same seed or checkpoint"
            )

    # -- checkpoints

    def gather_checkpoint(self, state, rngs):
        """Collective. ``state``: this rank's ``model.get_state()`` (arrays ``(L, n_r, H)``), ``rngs``:
        its dropout generators' states. Returns, on rank 0, the full ``(L, N, H)`` state and the
        extra checkpoint metadata (world size, every rank's generator states); None, None elsewhere."""
        self.check_in_sync("before saving a checkpoint")
        states = self.comm.gather(state, root=0)
        all_rngs = self.comm.gather(rngs, root=0)
        if not self.is_root:
            return None, None
        full = {key: np.concatenate([s[key] for s in states], axis=1) for key in state}
        return full, {"world_size": self.size, "rank_rngs": all_rngs}

    def restore_checkpoint(self, arrays, meta, where):
        """Take this rank's rows of the checkpoint's recurrent state and its own dropout generators.

        With the K of the checkpoint the run continues exactly. With another K (or a one-process
        checkpoint) parameters, optimizer and state are still exact; only the dropout generators of
        ranks > 0 restart from rank 0's state jumped, so masks differ from the saved run's."""
        state = {k[len("state/") :]: v for k, v in arrays.items() if k.startswith("state/")}
        if state:
            batch = state["h"].shape[1]
            rows = self.shard(batch)
            self.model.set_state({k: np.ascontiguousarray(v[:, rows]) for k, v in state.items()})
        saved = meta.get("rank_rngs")
        rngs = self.model.dropout_rngs()
        if saved is not None and len(saved) == self.size:
            if len(saved[self.rank]) != len(rngs):
                raise ValueError(f"{where}: {len(saved[self.rank])} random generators saved, the model has {len(rngs)}")
            for rng, s in zip(rngs, saved[self.rank]):
                set_rng_state(rng, s)
        elif self.rank:  # rank 0's states are already in place (LMTrainer.restore_training_state)
            for rng in rngs:
                rng.bit_generator.state = rng.bit_generator.jumped(self.rank).state
        self.check_in_sync("after loading the checkpoint")
