"""``torch.distributed`` for xpnet: a process group over MPI (mpi4py) or NCCL (CuPy), and collectives.

    # mpiexec -n 2 python train.py
    import xpnet.distributed as dist
    dist.init_process_group()                 # "auto": NCCL for the CuPy backend where it loads, else MPI
    t = xpnet.ones(3) * (dist.get_rank() + 1)
    dist.all_reduce(t, op=dist.ReduceOp.AVG)  # in place: t is [1.5, 1.5, 1.5] on both ranks
    work = dist.all_reduce(g, async_op=True)  # Work; g holds the sum after work.wait()
    dist.destroy_process_group()

Collectives take xpnet Tensors or raw arrays (NumPy, CuPy, array_api_strict) and write the result
into the same array (``collectives.py`` says when a Tensor's ``.data`` is rebound instead).
Install: ``pip install "xpnet[mpi]"`` (mpi4py and the MPICH wheel).
"""

from .collectives import (  # noqa: F401
    all_gather,
    all_gather_object,
    all_reduce,
    barrier,
    broadcast,
    broadcast_object_list,
    reduce_scatter,
)
from .group import (  # noqa: F401
    cuda_aware,
    destroy_process_group,
    get_backend,
    get_local_rank,
    get_local_world_size,
    get_rank,
    get_world_size,
    init_process_group,
    is_available,
    is_initialized,
    transport,
)
from .work import ReduceOp, Work  # noqa: F401

__all__ = [
    "init_process_group", "destroy_process_group", "is_available", "is_initialized", "get_rank",
    "get_world_size", "get_local_rank", "get_local_world_size", "get_backend", "cuda_aware", "transport",
    "ReduceOp", "Work", "all_reduce", "broadcast", "all_gather", "reduce_scatter", "barrier",
    "all_gather_object", "broadcast_object_list",
]
