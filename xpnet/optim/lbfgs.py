"""L-BFGS: a limited-memory quasi-Newton method, with an optional strong-Wolfe line search.

The optimizer works on one flat vector x, the concatenation of every parameter of its single group
(in group order, each flattened row-major), and re-evaluates the loss through the closure that
``step`` requires. The line search is written here: bracketing by cubic extrapolation, then a zoom
by safeguarded cubic interpolation (Nocedal & Wright, Numerical Optimization, algorithms 3.5-3.6),
with the same decisions as torch.optim's, so trajectories agree.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

from array_api_compat import array_namespace

from ..autodiff.function import enable_grad
from ..backends import backend_of, check_same_device, dtype_name, is_float_dtype, register_transfer, to_numpy, unwrap
from ..backends import transfer as _transfer
from .optimizer import Optimizer, _grad_array

# sufficient decrease (Armijo) and curvature constants of the strong Wolfe conditions
WOLFE_C1, WOLFE_C2 = 1e-4, 0.9
# the zoom stops once the bracket moves x by less than this; PyTorch's line search uses 1e-9
# whatever the group's tolerance_change is, and so does this one
LINE_SEARCH_TOLERANCE = 1e-9
# a curvature pair (s, y) enters the memory only when yᵀs exceeds this (keeps H positive definite)
CURVATURE_THRESHOLD = 1e-10

_ARRAY_KEYS = ("d", "prev_flat_grad")
_ARRAY_LIST_KEYS = ("old_dirs", "old_stps")
_NUMBER_KEYS = ("t", "H_diag", "prev_loss")
_STATE_KEYS = ("func_evals", "n_iter") + _ARRAY_KEYS + _ARRAY_LIST_KEYS + _NUMBER_KEYS + ("ro", "al")


def _dot(a, b) -> float:
    return float(array_namespace(a).vecdot(a, b))


def _max_abs(a) -> float:
    xp = array_namespace(a)
    return float(xp.max(xp.abs(a)))


def _loss_value(loss) -> float:
    try:
        return float(loss)
    except (TypeError, ValueError):
        raise TypeError(f"LBFGS.step: the closure must return the loss (a number or a one-element Tensor), got "
                        f"{type(loss).__name__}") from None


def cubic_minimizer(t1, f1, g1, t2, f2, g2, bounds=None) -> float:
    """The minimizer of the cubic through (t1, f1) and (t2, f2) with slopes g1 and g2, clipped to
    ``bounds`` (default: the interval between t1 and t2); the interval's midpoint when the cubic
    has no minimizer there (its derivative has no real root).

    With δ1 = g1 + g2 - 3 (f1 - f2)/(t1 - t2) and δ2 = √(δ1² - g1 g2), and t2 the farther point:
        t* = t2 - (t2 - t1) (g2 + δ2 - δ1) / (g2 - g1 + 2 δ2)
    """
    low, high = bounds if bounds is not None else (min(t1, t2), max(t1, t2))
    try:
        delta1 = g1 + g2 - 3 * (f1 - f2) / (t1 - t2)
        discriminant = delta1 * delta1 - g1 * g2
        if discriminant < 0:
            return (low + high) / 2.0
        delta2 = math.sqrt(discriminant)
        if t1 <= t2:
            t = t2 - (t2 - t1) * ((g2 + delta2 - delta1) / (g2 - g1 + 2 * delta2))
        else:
            t = t1 - (t1 - t2) * ((g1 + delta2 - delta1) / (g1 - g2 + 2 * delta2))
    except ZeroDivisionError:  # coincident points or a flat cubic: no information, bisect
        return (low + high) / 2.0
    return min(max(t, low), high)


class _Trial(NamedTuple):
    """One point of the line search: step length, loss, gradient (flat) and slope gᵀd there."""

    t: float
    f: float
    g: object
    slope: float


def strong_wolfe(evaluate, t, d, f, g, slope, max_evals, c1=WOLFE_C1, c2=WOLFE_C2,
                 tolerance=LINE_SEARCH_TOLERANCE):
    """A step length t along d satisfying the strong Wolfe conditions, from x with loss f,
    gradient g and slope gᵀd = ``slope`` < 0:

        f(x + t d) <= f + c1 t gᵀd            (sufficient decrease)
        |∇f(x + t d)ᵀ d| <= c2 |gᵀd|          (curvature)

    ``evaluate(t)`` returns (loss, flat gradient) at x + t d and leaves x as it was; at most
    ``max_evals`` evaluations follow the first. Returns (loss, gradient, t, evaluations): the best
    point found when the budget or the bracket tolerance ends the search first.
    """
    xp = array_namespace(d)
    d_size = _max_abs(d)
    start = _Trial(0.0, f, xp.asarray(g, copy=True), slope)
    f_new, g_new = evaluate(t)
    evals, iters = 1, 0
    previous, bracket = start, None
    # phase 1: extrapolate until an interval [previous, trial] is known to hold acceptable points
    while iters < max_evals:
        trial = _Trial(t, f_new, g_new, _dot(g_new, d))
        if f_new > f + c1 * t * slope or (iters > 1 and f_new >= previous.f):
            bracket = [previous, trial]
            break
        if abs(trial.slope) <= -c2 * slope:
            return trial.f, trial.g, trial.t, evals
        if trial.slope >= 0:
            bracket = [previous, trial]
            break
        # the loss still falls at t: the next trial lies further out, between 1.01 t and 10 t
        t = cubic_minimizer(previous.t, previous.f, previous.slope, t, f_new, trial.slope,
                            bounds=(t + 0.01 * (t - previous.t), t * 10))
        previous = trial
        f_new, g_new = evaluate(t)
        evals += 1
        iters += 1
    if bracket is None:  # the budget ran out while extrapolating: keep the better of x and the last trial
        bracket = [start, _Trial(t, f_new, g_new, _dot(g_new, d))]

    # phase 2: shrink the bracket around the best point, [low, high] with f(low) <= f(high)
    low, high = (0, 1) if bracket[0].f <= bracket[1].f else (1, 0)
    stalled = False
    while iters < max_evals:
        left, right = min(bracket[0].t, bracket[1].t), max(bracket[0].t, bracket[1].t)
        if (right - left) * d_size < tolerance:
            break
        a, b = bracket
        t = cubic_minimizer(a.t, a.f, a.slope, b.t, b.f, b.slope)
        # safeguard: a trial within 10% of an end twice in a row (or on it) moves 10% inside
        margin = 0.1 * (right - left)
        if min(right - t, t - left) < margin:
            if stalled or t >= right or t <= left:
                t = right - margin if abs(t - right) < abs(t - left) else left + margin
                stalled = False
            else:
                stalled = True
        else:
            stalled = False
        f_new, g_new = evaluate(t)
        evals += 1
        iters += 1
        trial = _Trial(t, f_new, g_new, _dot(g_new, d))
        if f_new > f + c1 * t * slope or f_new >= bracket[low].f:
            bracket[high] = trial  # not low enough: the new high end
            low, high = (0, 1) if bracket[0].f <= bracket[1].f else (1, 0)
            continue
        if abs(trial.slope) <= -c2 * slope:
            bracket[low] = trial
            break
        if trial.slope * (bracket[high].t - bracket[low].t) >= 0:
            bracket[high] = bracket[low]  # the slope points away from high: the old low becomes high
        bracket[low] = trial
    best = bracket[low]
    return best.f, best.g, best.t, evals


def _check_int(key, value, index):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"LBFGS: invalid {key}={value!r} in group {index}; expected an integer >= 1")


def _check_tolerance(key, value, index):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value >= 0
    if not ok:
        raise ValueError(f"LBFGS: invalid {key}={value!r} in group {index}; expected {key} >= 0")


class LBFGS(Optimizer):
    """LBFGS(params, lr=1, max_iter=20, max_eval=None, tolerance_grad=1e-7, tolerance_change=1e-9,
    history_size=100, line_search_fn=None)

    The quasi-Newton relative of Newton's method: Newton steps by -H g with H = (∇²f)⁻¹; BFGS builds
    an approximation of H from how the gradient changes between iterates, and L-BFGS keeps only the
    last m = history_size pairs s_i = x_{i+1} - x_i, y_i = g_{i+1} - g_i (with ρ_i = 1/(y_iᵀ s_i),
    a pair kept only when y_iᵀ s_i > 1e-10) and applies H to g without forming it, by the two-loop
    recursion, with γ = y_kᵀ s_k / y_kᵀ y_k (``H_diag``, the scale of H_0 = γ I):

        q = -g
        for i = k, ..., k-m+1:   α_i = ρ_i s_iᵀ q,   q = q - α_i y_i
        r = γ q
        for i = k-m+1, ..., k:   β_i = ρ_i y_iᵀ r,   r = r + (α_i - β_i) s_i
        d = r                    (= -H_k g, the search direction)

    Each iteration then moves x = x + t d: with line_search_fn=None, t = lr (on the very first
    iteration min(1, 1/‖g‖₁) lr); with "strong_wolfe", t comes from a line search started there
    (see ``strong_wolfe``). One ``step(closure)`` runs up to max_iter iterations and max_eval
    closure calls (default max_iter · 5 // 4), and stops early when max|g| <= tolerance_grad, when
    max|t d| <= tolerance_change, when the loss changes by less than tolerance_change, or when
    gᵀd > -tolerance_change. The first iteration ever is a gradient step (d = -g).

    As PyTorch's: a single parameter group; the closure zeroes the gradients, computes the loss,
    calls backward and returns the loss; step returns the closure's first loss. State (held under
    the group's first parameter, like PyTorch): ``func_evals``, ``n_iter`` (totals), ``d``, ``t``
    (last direction and step), ``old_dirs`` (y_i), ``old_stps`` (s_i), ``ro`` (ρ_i), ``H_diag``
    (γ), ``prev_flat_grad``, ``prev_loss``, ``al`` (α_i); the numbers are Python floats here
    where PyTorch keeps 0-d tensors, and ``load_state_dict`` accepts either.
    """

    def __init__(self, params, lr=1, max_iter=20, max_eval=None, tolerance_grad=1e-7, tolerance_change=1e-9,
                 history_size=100, line_search_fn=None):
        if max_eval is None and isinstance(max_iter, numbers.Integral) and not isinstance(max_iter, bool):
            max_eval = max_iter * 5 // 4
        defaults = dict(lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                        tolerance_change=tolerance_change, history_size=history_size, line_search_fn=line_search_fn)
        super().__init__(params, defaults)

    def add_param_group(self, param_group):
        if self.param_groups:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups): it optimizes one "
                             "flat vector of all its parameters; pass a single list of parameters")
        super().add_param_group(param_group)

    def _check_group(self, group, index):
        super()._check_group(group, index)
        for key in ("max_iter", "max_eval", "history_size"):
            _check_int(key, group[key], index)
        for key in ("tolerance_grad", "tolerance_change"):
            _check_tolerance(key, group[key], index)
        if group["line_search_fn"] not in (None, "strong_wolfe"):
            raise ValueError(f"LBFGS: invalid line_search_fn={group['line_search_fn']!r} in group {index}; "
                             "expected None or 'strong_wolfe'")

    # -- the flat vector ----------------------------------------------------------------------
    def _arrays(self):
        """The parameters' arrays, checked to make one flat vector: one namespace and device, one
        floating dtype."""
        if len(self.param_groups) != 1:
            raise ValueError(f"LBFGS.step: expected exactly one parameter group, got {len(self.param_groups)}")
        ws = [p.data for p in self.param_groups[0]["params"]]
        check_same_device(*ws, op="LBFGS.step (all parameters form one flat vector)")
        for i, w in enumerate(ws):
            if not is_float_dtype(w.dtype) or w.dtype != ws[0].dtype:
                raise ValueError(f"LBFGS.step: parameter {i} has dtype {dtype_name(w.dtype)}, expected "
                                 f"{dtype_name(ws[0].dtype)} like parameter 0 (one floating dtype for the flat vector)")
        return ws

    def _flat_grad(self, ws):
        """The gradients of all parameters as one new flat array (zeros for a parameter without one)."""
        xp = array_namespace(ws[0])
        parts = []
        for p, w in zip(self.param_groups[0]["params"], ws):
            g = _grad_array(p)
            if g is not None and tuple(g.shape) != tuple(w.shape):
                raise ValueError(f"LBFGS.step: a gradient has shape {tuple(g.shape)}, expected {tuple(w.shape)} "
                                 "(its parameter's shape)")
            parts.append(xp.zeros(math.prod(w.shape), dtype=w.dtype, device=w.device) if g is None
                         else xp.reshape(g, (-1,)))
        return xp.concat(parts)

    @staticmethod
    def _move(ws, t, d):
        """x = x + t d, in place in each parameter's own array."""
        xp = array_namespace(d)
        offset = 0
        for w in ws:
            size = math.prod(w.shape)
            w += t * xp.reshape(d[offset:offset + size], w.shape)
            offset += size

    @staticmethod
    def _direction(flat_grad, old_dirs, old_stps, ro, H_diag, al):
        """d = -H g by the two-loop recursion (the class docstring); ``al`` receives the α_i."""
        k = len(old_dirs)
        if len(al) < k:
            al.extend([None] * (k - len(al)))
        q = -flat_grad
        for i in range(k - 1, -1, -1):
            al[i] = _dot(old_stps[i], q) * ro[i]
            q -= al[i] * old_dirs[i]
        r = q * H_diag
        for i in range(k):
            beta = _dot(old_dirs[i], r) * ro[i]
            r += (al[i] - beta) * old_stps[i]
        return r

    # -- the step -----------------------------------------------------------------------------
    def step(self, closure=None):
        """Up to max_iter L-BFGS iterations; returns the loss the closure gave at the start."""
        if closure is None or not callable(closure):
            raise TypeError("LBFGS.step: a closure is required, step(closure), where closure() zeroes the "
                            "gradients, computes the loss, calls loss.backward() and returns the loss "
                            f"(L-BFGS evaluates the loss several times per step); got {closure!r}")
        ws = self._arrays()
        group = self.param_groups[0]
        lr, max_iter, max_eval = group["lr"], group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        history_size, line_search = group["history_size"], group["line_search_fn"]

        def evaluate():
            with enable_grad():
                return closure()

        state = self.state.setdefault(group["params"][0], {})
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)
        orig_loss = evaluate()
        loss = _loss_value(orig_loss)
        current_evals = 1
        state["func_evals"] += 1
        flat_grad = self._flat_grad(ws)
        if _max_abs(flat_grad) <= tolerance_grad:
            return orig_loss

        xp = array_namespace(flat_grad)
        d, t = state.get("d"), state.get("t")
        old_dirs, old_stps, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
        H_diag, prev_flat_grad, prev_loss = state.get("H_diag"), state.get("prev_flat_grad"), state.get("prev_loss")
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            if state["n_iter"] == 1:
                d = -flat_grad
                old_dirs, old_stps, ro, H_diag = [], [], [], 1.0
            else:
                y = flat_grad - prev_flat_grad
                s = d * t
                ys = _dot(y, s)
                if ys > CURVATURE_THRESHOLD:
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    H_diag = ys / _dot(y, y)
                if "al" not in state:
                    state["al"] = [None] * history_size
                d = self._direction(flat_grad, old_dirs, old_stps, ro, H_diag, state["al"])
            if prev_flat_grad is None:
                prev_flat_grad = xp.asarray(flat_grad, copy=True)
            else:
                prev_flat_grad[...] = flat_grad
            prev_loss = loss
            if state["n_iter"] == 1:
                t = min(1.0, 1.0 / float(xp.sum(xp.abs(flat_grad)))) * lr
            else:
                t = lr
            slope = _dot(flat_grad, d)
            if slope > -tolerance_change:  # not a descent direction (any more)
                break

            evals = 0
            if line_search == "strong_wolfe":
                x0 = [xp.asarray(w, copy=True) for w in ws]

                def along(step, x0=x0, d=d):
                    self._move(ws, step, d)
                    value = _loss_value(evaluate())
                    grad = self._flat_grad(ws)
                    for w, w0 in zip(ws, x0):
                        w[...] = w0
                    return value, grad

                loss, flat_grad, t, evals = strong_wolfe(along, t, d, loss, flat_grad, slope,
                                                         max_evals=max_eval - current_evals)
                self._move(ws, t, d)
                converged = _max_abs(flat_grad) <= tolerance_grad
            else:
                self._move(ws, t, d)
                converged = False
                if n_iter != max_iter:  # the last iteration's loss is left for the next step to evaluate
                    loss = _loss_value(evaluate())
                    flat_grad = self._flat_grad(ws)
                    converged = _max_abs(flat_grad) <= tolerance_grad
                    evals = 1
            current_evals += evals
            state["func_evals"] += evals

            if n_iter == max_iter or current_evals >= max_eval or converged:
                break
            if _max_abs(d) * abs(t) <= tolerance_change or abs(loss - prev_loss) < tolerance_change:
                break  # no more progress

        state.update(d=d, t=t, old_dirs=old_dirs, old_stps=old_stps, ro=ro, H_diag=H_diag,
                     prev_flat_grad=prev_flat_grad, prev_loss=prev_loss)
        return orig_loss

    # -- state dict ---------------------------------------------------------------------------
    def load_state_dict(self, state_dict):
        """Restore what ``state_dict()`` returned, or a PyTorch LBFGS state dict.

        The state (under the group's first parameter) is checked first: known keys only, every
        array flat with as many elements as all the parameters together; then the groups load as
        in ``Optimizer.load_state_dict``. On an error nothing changes. Arrays move to the first
        parameter's backend and device and take its dtype; 0-d tensors become Python floats.
        """
        if not isinstance(state_dict, dict) or not isinstance(state_dict.get("state"), dict) \
                or not isinstance(state_dict.get("param_groups"), list) or len(state_dict["param_groups"]) != 1:
            raise ValueError("LBFGS.load_state_dict: expected a dict with 'state' and 'param_groups' keys and "
                             "exactly one parameter group")
        params = self.param_groups[0]["params"]
        saved_params = list(state_dict["param_groups"][0].get("params", []))
        restored = None
        for key, entry in state_dict["state"].items():
            if not saved_params or int(key) != int(saved_params[0]) or not isinstance(entry, dict):
                raise ValueError(f"LBFGS.load_state_dict: state for parameter index {key}; LBFGS keeps its whole "
                                 f"state under the group's first parameter (index {saved_params[:1]})")
            restored = _restore_state(entry, params[0].data, sum(math.prod(p.data.shape) for p in params))
        super().load_state_dict({**state_dict, "state": {}})
        if restored is not None:
            self.state = {params[0]: restored}


def _as_number(key, value):
    if value is None or (isinstance(value, numbers.Real) and not isinstance(value, bool)):
        return value
    try:
        host = to_numpy(value)
        if host.size == 1:
            return float(host.reshape(()).item())
    except TypeError:
        pass
    raise ValueError(f"LBFGS.load_state_dict: state '{key}' must be a number (or a one-element array), "
                     f"got {type(value).__name__}")


def _restore_state(entry, w, numel):
    """One LBFGS state dict entry, checked and moved onto the backend, device and dtype of ``w``."""
    target = backend_of(w)

    def flat(key, value):
        array = unwrap(value)
        if getattr(array, "shape", None) is None or tuple(array.shape) != (numel,):
            shape = tuple(array.shape) if hasattr(array, "shape") else type(value).__name__
            raise ValueError(f"LBFGS.load_state_dict: state '{key}' is {shape}, expected a flat array of shape "
                             f"({numel},) (all parameters together)")
        moved = _transfer.to_device(array, backend=target)
        return target.xp.astype(moved, w.dtype, copy=True)

    out = {}
    for key, value in entry.items():
        if key not in _STATE_KEYS:
            raise ValueError(f"LBFGS.load_state_dict: unknown state '{key}' (expected some of {list(_STATE_KEYS)})")
        if key in ("func_evals", "n_iter"):
            out[key] = int(_as_number(key, value))
        elif key in _ARRAY_KEYS:
            out[key] = None if value is None else flat(key, value)
        elif key in _ARRAY_LIST_KEYS:
            out[key] = [flat(f"{key}[{i}]", v) for i, v in enumerate(value)]
        elif key in ("ro", "al"):
            out[key] = [_as_number(f"{key}[{i}]", v) for i, v in enumerate(value)]
        else:
            out[key] = _as_number(key, value)
    return out


def _move_lbfgs(opt, backend, device):
    """``to_device(optimizer, ...)`` for LBFGS: its state also holds lists of arrays."""
    for entry in opt.state.values():
        for key, value in entry.items():
            entry[key] = _transfer.to_device(value, backend=backend, device=device)
    return opt


register_transfer(LBFGS, _move_lbfgs)
