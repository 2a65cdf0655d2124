"""Differentiable operations, one module per family.

The functions listed in ``__all__`` are re-exported from ``xpnet`` itself, and Tensor methods and
operators call these same functions. The Function classes (``elementwise.Add``, ...) and the
raw-array helpers ``unbroadcast`` and ``indexing.index_add`` stay importable from here, and so
does ``return_types`` (the named ``(values, indices)`` pairs of max, min, sort and topk).
"""

from . import (accumulate, compare, elementwise, gather_scatter, indexing, linalg, rearrange, reduction,
               return_types, selection, shape)
from ._common import unbroadcast  # noqa: F401
from .accumulate import *  # noqa: F401,F403
from .compare import *  # noqa: F401,F403
from .elementwise import *  # noqa: F401,F403
from .gather_scatter import *  # noqa: F401,F403
from .indexing import *  # noqa: F401,F403
from .linalg import *  # noqa: F401,F403
from .rearrange import *  # noqa: F401,F403
from .rearrange import repeat  # noqa: F401  (Tensor.repeat; not exported: see rearrange.__all__)
from .reduction import *  # noqa: F401,F403
from .selection import *  # noqa: F401,F403
from .shape import *  # noqa: F401,F403

__all__ = (elementwise.__all__ + compare.__all__ + reduction.__all__ + linalg.__all__ + shape.__all__
           + indexing.__all__ + gather_scatter.__all__ + selection.__all__ + rearrange.__all__
           + accumulate.__all__)
