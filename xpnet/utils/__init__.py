"""``xpnet.utils``: where PyTorch programs look for ``torch.utils.data`` (see ``xpnet.utils.data``)."""

from . import data  # noqa: F401
