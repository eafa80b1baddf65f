"""Communicators: who the other processes are, and the few collective operations that
data-parallel training and sharded evaluation need.

A job of N processes ("ranks", numbered 0..N-1) is launched by MPI, for example
``mpirun -n 2 python -m minidl train ...``. Every rank runs the same program; they differ only
in ``rank``. The collectives used here:

* ``allreduce_sum(a)``: every rank ends with ``sum over ranks of a`` (in place). It is a
  reduction onto rank 0 followed by a broadcast, so all ranks hold bitwise the same result
  (a plain MPI allreduce may sum in a different order on different ranks, and ranks whose
  weights differ in the last bit drift apart over a run);
* ``broadcast(a, root)``: every rank ends with rank ``root``'s ``a`` (in place);
* ``allgather(a)``: the ranks' arrays (first axes may differ) concatenated in rank order;
* ``broadcast_object(obj)`` / ``allgather_object(obj)``: small plain Python values (a
  decision, a random state);
* ``abort(message)``: print the message and end every rank at once, so that one failing rank
  never leaves the others waiting in a collective forever.

:class:`SingleProcess` is the communicator of an ordinary run (rank 0 of 1; every collective is
the identity), so code written against a communicator runs unchanged without MPI.
:class:`MPICommunicator` uses mpi4py (the ``distributed`` extra). :class:`NCCLCommunicator`
sums CuPy arrays on the GPUs with NCCL (``cupy.cuda.nccl``) and uses MPI for everything else;
:func:`init` picks it when the arrays live on a GPU and NCCL is usable, else MPI.
"""
import os
import sys
import time

import numpy

from .. import backend

# Seconds a failing rank waits between its last line and MPI_Abort: the launcher forwards a
# rank's stderr through its own process and may tear that down on the abort before the line is
# read (CI once lost the "error on rank r of N" line this way, under load).
ABORT_GRACE_S = 0.5

# Variables that MPI launchers set in every process they start: MPICH/Hydra and Intel MPI
# (PMI_*), Open MPI (OMPI_COMM_WORLD_*), PMIx-based launchers and Slurm's srun (PMIX_*).
_LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")


def launched_by_mpi(environ=None):
    """True when this process was started by an MPI launcher with more than one rank."""
    environ = os.environ if environ is None else environ
    for name in _LAUNCHER_SIZE_VARIABLES:
        value = environ.get(name, "")
        if value.isdecimal() and int(value) > 1:
            return True
    return False


class Communicator:
    """The interface; see the module docstring for what each collective does."""

    rank = 0
    size = 1
    backend_name = "none"

    @property
    def is_root(self):
        return self.rank == 0

    def allreduce_sum(self, array):
        raise NotImplementedError

    def broadcast(self, array, root=0):
        raise NotImplementedError

    def allgather(self, array):
        raise NotImplementedError

    def broadcast_object(self, obj, root=0):
        raise NotImplementedError

    def allgather_object(self, obj):
        raise NotImplementedError

    def barrier(self):
        raise NotImplementedError

    def abort(self, message=None, code=1):
        """Print ``message`` (if any) and end every rank with exit status ``code``."""
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"


class SingleProcess(Communicator):
    """One process: rank 0 of 1. Every collective returns its input."""

    backend_name = "single"

    def allreduce_sum(self, array):
        return array

    def broadcast(self, array, root=0):
        _check_root(root, 1)
        return array

    def allgather(self, array):
        return numpy.ascontiguousarray(backend.to_numpy(array))

    def broadcast_object(self, obj, root=0):
        _check_root(root, 1)
        return obj

    def allgather_object(self, obj):
        return [obj]

    def barrier(self):
        pass

    def abort(self, message=None, code=1):
        if message:
            print(message, file=sys.stderr, flush=True)
        os._exit(code)


def _check_root(root, size):
    if not isinstance(root, int) or isinstance(root, bool) or not 0 <= root < size:
        raise ValueError(f"root: expected a rank in [0, {size}), got {root!r}")


def _host_buffer(array):
    """A C-contiguous host array MPI can read and write, and whether it is a copy."""
    if backend.get_array_module(array) is not numpy:
        return backend.to_numpy(array).copy(), True
    if not array.flags.c_contiguous:
        return numpy.ascontiguousarray(array), True
    return array, False


def _write_back(array, host, copied):
    if copied:
        xp = backend.get_array_module(array)
        array[...] = xp.asarray(host) if xp is not numpy else host
    return array


class MPICommunicator(Communicator):
    """Collectives over an mpi4py communicator (``MPI.COMM_WORLD`` by default).

    Arrays on the GPU are staged through host memory; use :class:`NCCLCommunicator` to keep
    gradient sums on the GPUs.
    """

    backend_name = "mpi"

    def __init__(self, comm=None):
        try:
            from mpi4py import MPI  # optional dependency: the `distributed` extra
        except ImportError as e:
            raise RuntimeError("minidl.distributed needs mpi4py and an MPI library: "
                               "pip install 'minidl[distributed]'") from e
        self._MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()

    def allreduce_sum(self, array):
        host, copied = _host_buffer(array)
        if self.size > 1:
            MPI = self._MPI
            if self.rank == 0:
                self.comm.Reduce(MPI.IN_PLACE, host, op=MPI.SUM, root=0)
            else:
                self.comm.Reduce(host, None, op=MPI.SUM, root=0)
            self.comm.Bcast(host, root=0)
        return _write_back(array, host, copied)

    def broadcast(self, array, root=0):
        _check_root(root, self.size)
        host, copied = _host_buffer(array)
        self.comm.Bcast(host, root=root)
        return _write_back(array, host, copied)

    def allgather(self, array):
        """Concatenate every rank's ``array`` along axis 0, in rank order (host NumPy result)."""
        host = numpy.ascontiguousarray(backend.to_numpy(array))
        meta = self.comm.allgather((host.shape, host.dtype.str))
        tails = {(tuple(shape[1:]), dtype) for shape, dtype in meta}
        if len(tails) != 1:
            raise ValueError(f"allgather: every rank must send arrays of one dtype and trailing shape, got {meta}")
        counts = [int(numpy.prod(shape)) for shape, _ in meta]
        out = numpy.empty((sum(shape[0] for shape, _ in meta),) + host.shape[1:], dtype=host.dtype)
        self.comm.Allgatherv(host, [out, counts])
        return out

    def broadcast_object(self, obj, root=0):
        _check_root(root, self.size)
        return self.comm.bcast(obj, root=root)

    def allgather_object(self, obj):
        return self.comm.allgather(obj)

    def barrier(self):
        self.comm.Barrier()

    def abort(self, message=None, code=1):
        if message:
            print(message, file=sys.stderr, flush=True)
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(ABORT_GRACE_S)
        self.comm.Abort(code)
        os._exit(code)  # MPI_Abort may return before the launcher ends this process


class NCCLCommunicator(MPICommunicator):
    """Sums CuPy arrays with NCCL on the GPUs; everything else, and host arrays, go over MPI.

    Each rank uses GPU ``local_rank % device_count``. The NCCL unique id is created on rank 0
    and broadcast over MPI.
    """

    backend_name = "nccl"

    def __init__(self, comm=None):
        super().__init__(comm)
        import cupy  # optional dependency: only on GPU machines
        from cupy.cuda import nccl
        self._cupy, self._nccl = cupy, nccl
        local = int(os.environ.get("MPI_LOCALRANKID", os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK", self.rank)))
        cupy.cuda.Device(local % cupy.cuda.runtime.getDeviceCount()).use()
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = self.comm.bcast(uid, root=0)
        self.nccl = nccl.NcclCommunicator(self.size, uid, self.rank)

    _NCCL_TYPES = {"float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64", "float16": "NCCL_FLOAT16",
                   "int32": "NCCL_INT32", "int64": "NCCL_INT64"}

    def allreduce_sum(self, array):
        if backend.get_array_module(array) is numpy:
            return super().allreduce_sum(array)
        if not array.flags.c_contiguous:
            raise ValueError("allreduce_sum: NCCL needs a C-contiguous array")
        kind = getattr(self._nccl, self._NCCL_TYPES[array.dtype.name])
        stream = self._cupy.cuda.get_current_stream().ptr
        # reduce onto rank 0, then broadcast: bitwise-equal results on every rank
        self.nccl.reduce(array.data.ptr, array.data.ptr, array.size, kind, self._nccl.NCCL_SUM, 0, stream)
        self.nccl.bcast(array.data.ptr, array.size, kind, 0, stream)
        return array


_world = SingleProcess()


def world():
    """The communicator of this process: the one :func:`init` made, else a :class:`SingleProcess`."""
    return _world


def init(backend_name="auto"):
    """Join the MPI job this process was launched in and make it the process's communicator.

    backend_name: ``"auto"`` (NCCL when CuPy sees a GPU and NCCL loads, else MPI), ``"mpi"``
        or ``"nccl"``. Without an MPI launcher (a plain ``python`` run) this returns the
        single-process communicator and needs no MPI at all.
    Returns the communicator (also available afterwards as :func:`world`).
    """
    global _world
    if backend_name not in ("auto", "mpi", "nccl"):
        raise ValueError(f"backend_name: expected 'auto', 'mpi' or 'nccl', got {backend_name!r}")
    if isinstance(_world, MPICommunicator):
        return _world
    if not launched_by_mpi():
        _world = SingleProcess()
        return _world
    if backend_name == "nccl" or (backend_name == "auto" and backend.cuda_available()):
        try:
            _world = NCCLCommunicator()
            return _world
        except Exception as e:  # NCCL missing or unusable: MPI still works (through the host)
            if backend_name == "nccl":
                raise RuntimeError(f"init: NCCL is not usable here ({e})") from e
    _world = MPICommunicator()
    return _world


def set_world(comm):
    """Make ``comm`` this process's communicator (tests, or a sub-communicator); returns the old one."""
    global _world
    if not isinstance(comm, Communicator):
        raise TypeError(f"comm: expected a Communicator, got {type(comm).__name__}")
    old, _world = _world, comm
    return old
