"""Mixed precision: ``autocast`` (low-precision compute, float32 master weights) and ``GradScaler``
(dynamic loss scaling), with PyTorch's names and semantics.

    scaler = xpnet.amp.GradScaler()
    with xpnet.amp.autocast("float16"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)          # unscales, skips the step if a gradient is inf/NaN
    scaler.update()                 # halves the scale after an overflow, doubles it after
                                    # growth_interval clean steps

Inside ``autocast``, GEMM-heavy Functions (Linear, Conv2d, matmul) cast their floating inputs to
the low dtype; reductions, normalisation, softmax and the losses cast theirs up to float32; every
other op runs in whatever dtype reaches it. The casts are recorded in the graph, so the parameters
stay float32 (the master weights) and receive float32 gradients. The low dtype must exist in the
backend: float16 on NumPy, CuPy and torch; bfloat16 on torch (and CuPy builds that have it);
array_api_strict has neither (the standard names no half-precision type).
"""

from __future__ import annotations

import contextlib
import importlib
import math

from .autodiff import function as _function
from .backends import backend_of, dtype_name, get_backend

# by module path: xpnet.nn.functional re-exports functions under some of these module names
_linalg, _reduction, _conv, _linear, _loss, _norm = (
    importlib.import_module(f"xpnet.{name}") for name in (
        "autodiff.ops.linalg", "autodiff.ops.reduction", "nn.functional.conv", "nn.functional.linear",
        "nn.functional.loss", "nn.functional.norm"))

LOW_PRECISION_FUNCTIONS = (_linear.Affine, _conv.Convolution2d, _linalg.MatMul)
FLOAT32_FUNCTIONS = (
    _norm.BatchNormFunction, _norm.LocalResponseNormFunction,
    _reduction.Softmax, _reduction.LogSoftmax, _reduction.LogSumExp, _reduction.Var, _reduction.Std,
    _loss.MseLoss, _loss.L1Loss, _loss.BinaryCrossEntropy, _loss.BinaryCrossEntropyWithLogits,
    _loss.CrossEntropyLoss, _loss.NllLoss, _loss.MultiMarginLoss,
)
for _cls in LOW_PRECISION_FUNCTIONS:
    _cls.autocast = "low"
for _cls in FLOAT32_FUNCTIONS:
    _cls.autocast = "float32"


def autocast_dtype():
    """The low dtype name inside ``autocast``, else None."""
    return _function._autocast_dtype.get()


class autocast(contextlib.ContextDecorator):
    """``with xpnet.amp.autocast("float16"):`` (or ``"bfloat16"``): run the forward pass in mixed
    precision; ``enabled=False`` turns it off (also inside an enclosing autocast)."""

    def __init__(self, dtype="float16", enabled: bool = True):
        self.dtype = dtype_name(dtype)
        if self.dtype not in ("float16", "bfloat16"):
            raise ValueError(f"autocast: dtype must be float16 or bfloat16, got {self.dtype}")
        self.enabled = bool(enabled)

    def __enter__(self):
        if self.enabled:
            backend = get_backend()
            if getattr(backend.xp, self.dtype, None) is None:
                raise TypeError(f"autocast: backend {backend} has no {self.dtype} dtype; "
                                "use float16 on numpy/cupy/torch or bfloat16 on torch")
        self._token = _function._autocast_dtype.set(self.dtype if self.enabled else None)
        return self

    def __exit__(self, *exc):
        _function._autocast_dtype.reset(self._token)
        return False


class GradScaler:
    """Dynamic loss scaling for float16 training (the scheme of Micikevicius et al., 2018).

    With S the scale: backward runs on S * L so that small float16 gradients do not flush to zero;
    ``step`` first divides every gradient by S (``unscale_``) and skips the optimizer step when any
    of them is inf or NaN; ``update`` then sets S <- S * backoff_factor after such a step, or
    S <- S * growth_factor after ``growth_interval`` consecutive clean steps.
    """

    def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000,
                 enabled: bool = True):
        if growth_factor <= 1.0 or not 0.0 < backoff_factor < 1.0:
            raise ValueError("GradScaler: need growth_factor > 1 and 0 < backoff_factor < 1, got "
                             f"{growth_factor} and {backoff_factor}")
        self._scale = float(init_scale)
        self.growth_factor = float(growth_factor)
        self.backoff_factor = float(backoff_factor)
        self.growth_interval = int(growth_interval)
        self.enabled = bool(enabled)
        self._growth_tracker = 0
        self._found_inf = {}   # id(optimizer) -> bool, for optimizers unscaled in this iteration
        self._stepped = False

    def get_scale(self) -> float:
        return self._scale if self.enabled else 1.0

    def is_enabled(self) -> bool:
        return self.enabled

    def scale(self, outputs):
        """``outputs * S`` (a Tensor, or a list/tuple of them)."""
        if not self.enabled:
            return outputs
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(o * self._scale for o in outputs)
        return outputs * self._scale

    def unscale_(self, optimizer) -> None:
        """Divide the gradients of ``optimizer``'s parameters by S, once per iteration, and note
        whether any is inf/NaN (for example before ``clip_grad_norm_``)."""
        if not self.enabled:
            return
        key = id(optimizer)
        if key in self._found_inf:
            raise RuntimeError("GradScaler.unscale_ was already called for this optimizer since the last update()")
        inv = 1.0 / self._scale
        found = False
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.data
                xp = backend_of(g).xp
                g = g * inv
                p.grad.data = g
                if not found and not bool(xp.all(xp.isfinite(g))):
                    found = True
        self._found_inf[key] = found

    def step(self, optimizer, *args, **kwargs):
        """Unscale if needed, then ``optimizer.step()`` unless a gradient overflowed."""
        if not self.enabled:
            return optimizer.step(*args, **kwargs)
        if id(optimizer) not in self._found_inf:
            self.unscale_(optimizer)
        self._stepped = True
        if self._found_inf[id(optimizer)]:
            return None
        return optimizer.step(*args, **kwargs)

    def update(self, new_scale=None) -> None:
        """Adjust S for the next iteration (see the class docstring)."""
        if not self.enabled:
            return
        if new_scale is not None:
            self._scale = float(new_scale)
        elif any(self._found_inf.values()):
            self._scale *= self.backoff_factor
            self._growth_tracker = 0
        elif self._found_inf:
            self._growth_tracker += 1
            if self._growth_tracker == self.growth_interval:
                self._scale *= self.growth_factor
                self._growth_tracker = 0
        if not math.isfinite(self._scale):
            raise FloatingPointError(f"GradScaler: the scale became {self._scale}")
        self._found_inf = {}
        self._stepped = False

    def state_dict(self) -> dict:
        return {"scale": self._scale, "growth_factor": self.growth_factor, "backoff_factor": self.backoff_factor,
                "growth_interval": self.growth_interval, "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state: dict) -> None:
        missing = {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"} - set(state)
        if missing:
            raise KeyError(f"GradScaler.load_state_dict: missing keys {sorted(missing)}")
        self._scale = float(state["scale"])
        self.growth_factor = float(state["growth_factor"])
        self.backoff_factor = float(state["backoff_factor"])
        self.growth_interval = int(state["growth_interval"])
        self._growth_tracker = int(state["_growth_tracker"])
