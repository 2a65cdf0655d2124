"""``torch.backends.mps``'s questions, answered for xpnet: there is no Apple-GPU backend, so a PyTorch
program that asks ``xpnet.backends.mps.is_available()`` (as PyTorch's examples do) takes its CPU or
CUDA branch."""


def is_available() -> bool:
    """False: xpnet has no Metal (MPS) backend; use "cpu" (NumPy) or "cuda" (CuPy)."""
    return False


def is_built() -> bool:
    """False: xpnet is never built with MPS."""
    return False
