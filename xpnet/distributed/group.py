"""The default process group: start and end it, and what each rank knows about it.

Launch with ``mpiexec -n N python script.py``: rank and world size come from MPI's COMM_WORLD
(mpi4py). The group's engine is MPI, or NCCL (CuPy) for device arrays. ``init_process_group``
also makes an uncaught exception on any rank abort the whole job (``MPI_Abort``), as
``python -m mpi4py`` does: otherwise the other ranks would wait forever in their next collective.
"""

from __future__ import annotations

import atexit
import os
import sys
import time

_state = None  # the live group: a _Group, or None


class _Group:
    def __init__(self, engine, comm, local_comm, backend, timeout, previous_hook):
        self.engine = engine
        self.comm = comm
        self.local_comm = local_comm
        self.backend = backend
        self.timeout = timeout
        self.previous_hook = previous_hook


def _mpi(initialize=False):
    """``mpi4py.MPI``, or an ImportError with the one-line install hint.

    Importing it through here does not start MPI (``xpnet info``, ``is_available()`` stay cheap
    and leave the process alone); ``initialize=True`` starts it (thread level MULTIPLE) where
    nobody has, and finalises it at exit."""
    try:
        import mpi4py

        if "mpi4py.MPI" not in sys.modules:
            mpi4py.rc.initialize = False
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError('xpnet.distributed needs mpi4py and an MPI library: pip install "xpnet[mpi]"') from exc
    if initialize and not MPI.Is_initialized():
        MPI.Init_thread(MPI.THREAD_MULTIPLE)
        atexit.register(_finalize, MPI)
    return MPI


def _finalize(MPI):
    destroy_process_group()
    if MPI.Is_initialized() and not MPI.Is_finalized():
        MPI.Finalize()


def is_available() -> bool:
    """Whether a process group can be started here (mpi4py and an MPI library load)."""
    try:
        _mpi()
    except ImportError:
        return False
    return True


def is_initialized() -> bool:
    return _state is not None


def group(name):
    """The live group, or a RuntimeError naming the function called before ``init_process_group``."""
    if _state is None:
        raise RuntimeError(f"xpnet.distributed.{name}: the default process group is not initialized; "
                           f"call xpnet.distributed.init_process_group() first (launch with mpiexec -n N)")
    return _state


def init_process_group(backend="auto", timeout=None, init_method=None, world_size=-1, rank=-1, **kwargs):
    """Start the default process group over MPI's COMM_WORLD (``mpiexec -n N``).

    backend  ``"auto"``: NCCL when the current xpnet backend is CuPy and ``cupy.cuda.nccl`` loads,
             else MPI; ``"mpi"``; ``"nccl"``. torch's ``"gloo"`` is read as ``"mpi"``.
    timeout  seconds or a ``timedelta``: a collective whose peers do not join in time raises
             ``TimeoutError`` (default: none, MPI waits)
    init_method, world_size, rank (torch's) are accepted when they agree with the MPI launcher.

    With the CuPy backend each rank makes GPU ``get_local_rank()`` current, unless XPNET_DEVICE
    chose one (UNTESTED: no GPU on the test machine).
    """
    global _state
    if _state is not None:
        raise RuntimeError("xpnet.distributed.init_process_group: trying to initialize the default "
                           "process group twice (call destroy_process_group() first)")
    if kwargs:
        raise TypeError(f"init_process_group: unexpected arguments {sorted(kwargs)}")
    name = {"gloo": "mpi"}.get(str(backend).lower(), str(backend).lower())
    if name not in ("auto", "mpi", "nccl"):
        raise ValueError(f"init_process_group: backend must be 'auto', 'mpi' or 'nccl', got {backend!r}")
    if init_method not in (None, "env://"):
        raise ValueError(f"init_process_group: ranks come from the MPI launcher (mpiexec); "
                         f"init_method={init_method!r} is not supported")
    MPI = _mpi(initialize=True)
    comm = MPI.COMM_WORLD.Dup()
    for what, given, actual in (("world_size", world_size, comm.Get_size()), ("rank", rank, comm.Get_rank())):
        if given not in (-1, None) and int(given) != actual:
            comm.Free()
            raise ValueError(f"init_process_group: {what}={given} but the MPI launcher says {actual}")
    local_comm = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    _select_gpu(local_comm.Get_rank())
    if name == "auto":
        name = "nccl" if _current_backend_name() == "cupy" and _nccl_loads() else "mpi"
    if name == "nccl":
        from .nccl import NCCLEngine

        engine = NCCLEngine(comm, timeout=timeout)
    else:
        from .mpi import MPIEngine

        engine = MPIEngine(comm, device_buffers=cuda_aware(), timeout=timeout)
    previous = sys.excepthook
    if comm.Get_size() > 1:
        sys.excepthook = _abort_on_uncaught
    _state = _Group(engine, comm, local_comm, name, timeout, previous)


def destroy_process_group(group=None) -> None:
    """End the default group (its communicators are freed; ``init_process_group`` may run again)."""
    global _state
    if group is not None:
        raise ValueError("destroy_process_group: group must be None; xpnet has only the default group (sub-groups are not built)")
    state, _state = _state, None
    if state is None:
        return
    if sys.excepthook is _abort_on_uncaught:
        sys.excepthook = state.previous_hook
    state.engine.close()
    for comm in (state.local_comm, state.comm):
        try:
            comm.Free()
        except Exception:  # noqa: BLE001 -- MPI may already be finalising at interpreter exit
            pass


def get_rank(group=None) -> int:
    _only_default(group, "get_rank")
    return _group_of("get_rank").comm.Get_rank()


def get_world_size(group=None) -> int:
    _only_default(group, "get_world_size")
    return _group_of("get_world_size").comm.Get_size()


def get_local_rank() -> int:
    """This rank's index among the ranks on the same node (MPI_COMM_TYPE_SHARED)."""
    return _group_of("get_local_rank").local_comm.Get_rank()


def get_local_world_size() -> int:
    return _group_of("get_local_world_size").local_comm.Get_size()


def get_backend(group=None) -> str:
    """``"mpi"`` or ``"nccl"``."""
    _only_default(group, "get_backend")
    return _group_of("get_backend").backend


def _group_of(name):
    return group(name)


def _only_default(group, name):
    if group is not None:
        raise ValueError(f"xpnet.distributed.{name}: group must be None; xpnet has only the default group (sub-groups are not built)")


# -- CUDA ------------------------------------------------------------------------------------------
def cuda_aware() -> bool:
    """Whether the MPI library reads and writes CUDA memory itself (then CuPy arrays are sent
    without host copies). XPNET_MPI_CUDA_AWARE=0/1 overrides the library's answer
    (``MPI.Query_cuda_support`` where mpi4py has it, else ``MPIX_Query_cuda_support``; before
    MPI has started, a child process is asked, once)."""
    forced = os.environ.get("XPNET_MPI_CUDA_AWARE", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    try:
        MPI = _mpi()
    except ImportError:
        return False
    if not MPI.Is_initialized() or MPI.Is_finalized():
        return _probe_in_child()
    query = getattr(MPI, "Query_cuda_support", None)
    if query is not None:
        try:
            return bool(query())
        except Exception:  # noqa: BLE001
            return False
    return _mpix_query_cuda_support()


_probed = None


def _probe_in_child() -> bool:
    """Ask a short-lived child process (MPI answers only once started, and starting it here would
    tie this process to MPI); the answer is kept."""
    global _probed
    if _probed is None:
        import subprocess

        code = ("import xpnet.distributed.group as g; g._mpi(initialize=True); "
                "print(int(g.cuda_aware()))")
        try:
            child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
            _probed = child.stdout.strip().endswith("1")
        except (OSError, subprocess.SubprocessError):
            _probed = False
    return _probed


def _mpix_query_cuda_support() -> bool:
    """``MPIX_Query_cuda_support()`` from the MPI library mpi4py loaded (MPICH, Open MPI), else False."""
    import ctypes

    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "libmpi" in line and "/" in line})
    except OSError:
        return False
    for path in paths:
        try:
            query = getattr(ctypes.CDLL(path), "MPIX_Query_cuda_support", None)
        except OSError:
            continue
        if query is not None:
            query.restype = ctypes.c_int
            return bool(query())
    return False


def transport() -> str:
    """One line for ``xpnet info``: which path collectives on CuPy arrays take."""
    if not is_available():
        return 'not available (pip install "xpnet[mpi]")'
    MPI = _mpi()
    library = " ".join(MPI.Get_library_version().splitlines()[0].split())
    path = "CUDA-aware: device buffers" if cuda_aware() else "host copies for CuPy arrays"
    nccl = "NCCL available" if _nccl_loads() else "no NCCL"
    return f"{library}; {path}; {nccl}"


def _nccl_loads() -> bool:
    from .nccl import nccl_module

    return nccl_module() is not None


def _current_backend_name():
    from ..backends import get_backend as current

    return current().name


def _select_gpu(local_rank):
    """CuPy backend: make GPU ``local_rank`` current for this process, unless XPNET_DEVICE chose one.
    UNTESTED (no GPU on the test machine)."""
    if os.environ.get("XPNET_DEVICE") or _current_backend_name() != "cupy":
        return
    import cupy

    from ..backends import set_backend

    index = local_rank % max(1, cupy.cuda.runtime.getDeviceCount())
    cupy.cuda.Device(index).use()
    set_backend("cupy", device=index)


def _abort_on_uncaught(kind, value, traceback):
    """Print the traceback, then end every rank (an uncaught exception on one rank would leave the
    others waiting in their next collective)."""
    hook = _state.previous_hook if _state is not None else sys.__excepthook__
    hook(kind, value, traceback)
    try:
        sys.stderr.flush()
        sys.stdout.flush()
        # the launcher forwards each rank's output through a pipe; abort only once it has had time to
        # carry the message, or the job would end without saying which rank failed and why
        time.sleep(0.5)
        from mpi4py import MPI

        MPI.COMM_WORLD.Abort(1)
    except Exception:  # noqa: BLE001
        os._exit(1)
