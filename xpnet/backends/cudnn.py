"""``torch.backends.cudnn``'s switches, so PyTorch programs that set them run unchanged
(``import xpnet.backends.cudnn as cudnn; cudnn.benchmark = True``).

xpnet's CuPy backend runs its own convolution kernels, not cuDNN, so the switches are recorded and
change nothing: ``benchmark`` (pick the fastest algorithm per shape; xpnet's kernels are chosen by
shape rules already), ``deterministic`` (xpnet's CuPy kernels are deterministic), ``enabled`` and
``allow_tf32`` (TF32 for GEMMs is ``xpnet.cuda.set_tf32``, off by default)."""

benchmark = False
deterministic = False
enabled = True
allow_tf32 = True


def is_available() -> bool:
    """False: xpnet does not call cuDNN."""
    return False


def version():
    """None: no cuDNN is loaded by xpnet."""
    return None
