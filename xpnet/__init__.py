"""xpnet: one neural-network code base for NumPy (CPU) and CuPy (CUDA GPU) through the Array API."""

__version__ = "0.1.0"

from .backends import (  # noqa: F401
    Backend,
    BackendUnavailableError,
    DeviceMismatchError,
    available_backends,
    backend_of,
    check_same_device,
    device,
    device_of,
    get_backend,
    get_default_dtype,
    manual_seed,
    set_backend,
    set_default_dtype,
    to_device,
    to_numpy,
    use_backend,
)
from .backends.dtypes import (  # noqa: F401
    bfloat16,
    bool_,
    float16,
    float32,
    float64,
    int8,
    int16,
    int32,
    int64,
    uint8,
)
from .autodiff import Function, Tensor, enable_grad, is_grad_enabled, no_grad, set_grad_enabled  # noqa: F401
from .autodiff.factories import (  # noqa: F401
    arange,
    as_tensor,
    empty,
    full,
    full_like,
    ones,
    ones_like,
    rand,
    randint,
    randn,
    tensor,
    zeros,
    zeros_like,
)
from .autodiff.ops import *  # noqa: F401,F403
from .autodiff.ops import return_types  # noqa: F401  -- torch.return_types: (values, indices) pairs
from .autodiff.tensor_methods import from_numpy  # noqa: F401
from . import autodiff  # noqa: F401
from .serialization import SerializationError, load, save  # noqa: F401  -- torch.save / torch.load, no pickle

bool = bool_  # noqa: A001  -- xpnet.bool names the boolean dtype, as torch.bool does

_SUBPACKAGES = ("nn", "optim", "data", "models", "train", "classic", "bench", "cuda", "amp", "utils", "distributed")


def __getattr__(name):
    # subpackages load on first use, so `import xpnet` stays quick and layers import in order
    if name in _SUBPACKAGES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'xpnet' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBPACKAGES))


def _select_from_environment():
    """Resolve XPNET_BACKEND / XPNET_DEVICE now, so a bad choice fails at import with its reason."""
    import os
    import sys

    if not os.environ.get("XPNET_BACKEND") and not os.environ.get("XPNET_DEVICE"):
        return
    try:
        get_backend()
    except (BackendUnavailableError, ValueError) as caught:
        exc = caught
        previous = sys.excepthook

        def short_hook(kind, value, tb):
            if value is exc:
                print(f"xpnet: {kind.__name__}: {value} (XPNET_BACKEND={os.environ.get('XPNET_BACKEND', '')!r}, "
                      f"XPNET_DEVICE={os.environ.get('XPNET_DEVICE', '')!r})", file=sys.stderr)
                if not hasattr(sys, "ps1") and not sys.flags.interactive:
                    # a script or `xpnet ...` ends here: a usage error of the environment exits 2,
                    # like every other usage error (an interactive session goes on)
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(2)
            else:
                previous(kind, value, tb)

        sys.excepthook = short_hook
        raise exc.with_traceback(None) from None


_select_from_environment()
