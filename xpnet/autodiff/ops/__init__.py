"""Differentiable operations, one module per family.

The functions listed in ``__all__`` are re-exported from ``xpnet`` itself, and Tensor methods and
operators call these same functions. The Function classes (``elementwise.Add``, ...) and the
raw-array helpers ``unbroadcast`` and ``indexing.index_add`` stay importable from here.
"""

from . import compare, elementwise, indexing, linalg, reduction, shape
from ._common import unbroadcast  # noqa: F401
from .compare import *  # noqa: F401,F403
from .elementwise import *  # noqa: F401,F403
from .indexing import *  # noqa: F401,F403
from .linalg import *  # noqa: F401,F403
from .reduction import *  # noqa: F401,F403
from .shape import *  # noqa: F401,F403

__all__ = elementwise.__all__ + compare.__all__ + reduction.__all__ + linalg.__all__ + shape.__all__ + indexing.__all__
