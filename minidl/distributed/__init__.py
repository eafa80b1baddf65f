"""Data-parallel training and sharded evaluation over MPI (the ``distributed`` extra).

    mpirun -n 2 python -m minidl train --dataset mnist --model wong_mnist ...

Every rank runs the same program. :func:`init` joins the MPI job (it is the identity in a plain
``python`` run); :func:`broadcast_parameters` gives every rank rank 0's weights; a
:class:`~minidl.data.DataLoader` built with ``shard=comm`` yields each rank's disjoint part of
every global batch; :class:`DistributedOptimizer` averages the gradients before each step.
``robust_accuracy`` (and so the ``attack`` command and the sanity checks) splits the test set
over the ranks of :func:`world` and gathers the per-example results in order.
"""
from .comm import (Communicator, MPICommunicator, NCCLCommunicator, SingleProcess, init, launched_by_mpi,
                   set_world, world)
from .data_parallel import DistributedOptimizer, allreduce_gradients, broadcast_parameters
from .sharding import shard, shard_bounds

__all__ = ["Communicator", "MPICommunicator", "NCCLCommunicator", "SingleProcess", "init", "launched_by_mpi",
           "set_world", "world", "DistributedOptimizer", "allreduce_gradients", "broadcast_parameters",
           "shard", "shard_bounds"]
