"""Optimizer: parameter groups, per-parameter state, and one fused update per parameter.

A subclass supplies ``init_state(w, group)`` (the fresh state of one parameter, as a dict of
arrays and a ``step`` count), ``step_scalars(state, group)`` (the host-side numbers of this step -
options, decayed rates, bias corrections - as the subclass's NamedTuple, computed once per
parameter and step) and ``update(w, g, state, group, scalars)``: the whole update rule of one
parameter over raw arrays of its namespace.

The update rule, for every implementation (the generic ``update`` and every backend kernel; checked
for each by tests/optim/test_optim_update_rule.py):

    an update writes the new parameter values into ``w`` in place and returns ``w``;
    it never writes into ``g``.

The state arrays belong to the optimizer alone and are updated in place too. So, as in PyTorch, a
parameter's ``.data`` stays the same array object from step to step, and views of it (the arrays
of ``state_dict()``) see the new values.

A backend may register a faster version of an update under the optimizer's ``kernel_name`` (for
example ``register_kernel("cupy", kernels.ADAM_STEP)``). It is called as
``kernel(w, g, state, group, scalars)`` with the ``scalars`` the generic update would get, must
give the same numbers under the same rule, and may return None to decline (no compiled library, a
dtype it does not cover) before it changes anything: the generic ``update`` then runs. A group's
``fused=None`` (default) uses a kernel where one is registered, ``fused=False`` never, and
``fused=True`` requires one (a RuntimeError when there is none or it declines).

An optimizer whose step scalars depend on the group alone (not on a parameter's state: SGD) may also
name a ``group_kernel_name``: a backend's kernel for it updates all the parameters of a group in one
call, ``kernel(ws, gs, states, group, scalars)`` (the parameters that have a gradient, their
gradients, their state dicts, the group's scalars), under the same rule for each parameter and with
the same bits as the per-parameter update, writing every ``w`` in place and returning ``ws``. It
declines with None, before it changes anything, whenever one parameter would not go through the
per-parameter kernel (a dtype, a layout, no library) or the group mixes dtypes or lists an array
twice: the per-parameter path then runs (and raises the errors its checks are for). ``fused=False``
skips it too.
"""

from __future__ import annotations

import copy
import warnings

from ..autodiff.function import enable_grad
from ..backends import (backend_name_of, backend_of, check_same_device, dtype_name, is_float_dtype, register_transfer,
                        to_numpy, unwrap)
from ..backends import transfer as _transfer


def _is_parameter(obj) -> bool:
    return hasattr(obj, "data") and hasattr(obj, "grad") and not isinstance(obj, dict)


def _grad_array(p):
    """The raw gradient array of a parameter, or None when it has none."""
    grad = p.grad
    if grad is None:
        return None
    return grad if backend_name_of(grad) is not None else grad.data


def _non_negative(value) -> bool:
    try:
        return float(value) >= 0
    except (TypeError, ValueError):
        return False


def _shape(array) -> tuple:
    return tuple(array.shape)


class Optimizer:
    """Base class: ``Optimizer(params, defaults)``.

    ``params`` is an iterable of parameters (objects with ``.data`` and ``.grad``, e.g. Tensors
    with ``requires_grad=True`` or ``nn.Parameter``) or of dicts, each a parameter group
    ``{'params': [...], 'lr': ...}`` whose missing options take ``defaults``.

    ``param_groups``  the groups (dicts); ``param_groups[i]['lr']`` is the live learning rate,
                      read at every step and written by the learning-rate schedulers
    ``state``         per parameter (keyed by the parameter object): a dict of arrays and ``step``
    """

    kernel_name = None  # a KernelName from xpnet.backends.kernels
    group_kernel_name = None  # a KernelName for one update of a whole group (see the module docstring)

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.state: dict = {}
        self.param_groups: list = []
        name = type(self).__name__
        if _is_parameter(params) or backend_name_of(params) is not None:
            raise TypeError(
                f"{name}: params must be an iterable of Tensors or of dicts (parameter groups), "
                f"got a single {type(params).__name__}; pass [tensor] or model.parameters()"
            )
        if isinstance(params, set):
            raise TypeError(f"{name}: params must be an ordered iterable (list, generator), got a set")
        groups = list(params)
        if not groups:
            raise ValueError(f"{name}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # -- groups -------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters with its own options (missing ones take the defaults)."""
        name = type(self).__name__
        if not isinstance(param_group, dict):
            raise TypeError(f"{name}.add_param_group: expected a dict, got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError(f"{name}.add_param_group: the group has no 'params' entry")
        params = param_group["params"]
        if _is_parameter(params):
            params = [params]
        elif isinstance(params, set):
            raise TypeError(f"{name}: a parameter group's params must be ordered (a list), got a set")
        else:
            params = list(params)
        for index, p in enumerate(params):
            if not _is_parameter(p):
                raise TypeError(
                    f"{name}: parameter {index} of group {len(self.param_groups)} is a {type(p).__name__}, "
                    "expected an object with .data and .grad (a Tensor or nn.Parameter)"
                )
            if not getattr(p, "is_leaf", True):
                raise ValueError(
                    f"{name}: parameter {index} of group {len(self.param_groups)} is not a leaf Tensor "
                    "(it was computed from others); optimize the leaves, or .detach() it first"
                )
        seen = set()
        for p in params:
            if id(p) in seen:
                warnings.warn(f"{name}: a parameter appears twice in one group; it will be updated twice",
                              stacklevel=2)
            seen.add(id(p))
        existing = {id(p) for group in self.param_groups for p in group["params"]}
        if existing & seen:
            raise ValueError(f"{name}: some parameters appear in more than one parameter group")
        group = {k: v for k, v in param_group.items() if k != "params"}
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        group["params"] = params
        self._check_group(group, len(self.param_groups))
        self.param_groups.append(group)

    def _check_group(self, group: dict, index: int) -> None:
        """Validate one group's options (subclasses add their own checks)."""
        lr = group.get("lr", 0.0)
        if not _non_negative(lr):
            raise ValueError(f"{type(self).__name__}: invalid learning rate lr={lr!r} in group {index}; expected lr >= 0")
        wd = group.get("weight_decay", 0.0)
        if not _non_negative(wd):
            raise ValueError(
                f"{type(self).__name__}: invalid weight_decay={wd!r} in group {index}; expected weight_decay >= 0"
            )

    # -- the step -----------------------------------------------------------------------------
    def init_state(self, w, group: dict) -> dict:
        """The state of a parameter before its first update."""
        return {}

    @staticmethod
    def step_scalars(state: dict, group: dict):
        """The host-side numbers of this step for one parameter (after ``state['step']`` counts it),
        as the subclass's NamedTuple; the generic update and every kernel receive the same one."""
        return None

    @staticmethod
    def update(w, g, state: dict, group: dict, scalars):
        """Write the new parameter values into ``w`` and return ``w`` (subclasses define the rule)."""
        raise TypeError("Optimizer.update: use a subclass (SGD, Adam, ...) that defines an update rule")

    def _kernel(self, w, group):
        """The backend's fast path for this optimizer, or None (the generic update runs)."""
        fused = group.get("fused")
        if self.kernel_name is None or fused is False:
            return None
        fast = backend_of(w).kernel(self.kernel_name)
        if fast is None and fused:
            raise RuntimeError(
                f"{type(self).__name__}(fused=True): backend {backend_of(w)} has no '{self.kernel_name}' "
                "kernel; use fused=None (fast path where one exists) or fused=False"
            )
        return fast

    def _update(self, w, g, state, group, gi, pi) -> None:
        """One parameter's update by the kernel, or by the generic rule when there is none or it
        declines; either way into ``w`` itself."""
        scalars = self.step_scalars(state, group)
        fast = self._kernel(w, group)
        out = None if fast is None else fast(w, g, state, group, scalars)
        if out is None:
            if fast is not None and group.get("fused"):
                raise RuntimeError(
                    f"{type(self).__name__}(fused=True): the '{self.kernel_name}' kernel of backend "
                    f"{backend_of(w)} declined parameter {pi} of group {gi} (dtype {dtype_name(w.dtype)}, "
                    f"shape {_shape(w)}); use fused=None (fast path where one applies) or fused=False"
                )
            out = self.update(w, g, state, group, scalars)
        if out is not w:
            raise RuntimeError(
                f"{type(self).__name__}.step: the update of parameter {pi} in group {gi} returned a new array; "
                "an update writes the new values into w in place and returns w (xpnet.optim.optimizer)"
            )

    def step(self, closure=None):
        """One update of every parameter that has a gradient. ``closure`` (optional) re-evaluates
        the model and returns the loss, computed with gradients enabled; step returns it."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for gi, group in enumerate(self.param_groups):
            if self.group_kernel_name is not None and group.get("fused") is not False and self._step_group(group):
                continue
            for pi, p in enumerate(group["params"]):
                g = _grad_array(p)
                if g is None:
                    continue
                w = p.data
                state = self.state.get(p)
                if state is None:
                    state = self.init_state(w, group)
                self._check_inputs(w, g, state, gi, pi)
                if "step" in state:
                    state["step"] += 1
                try:
                    self._update(w, g, state, group, gi, pi)  # p.data stays the same array object
                except Exception:
                    if "step" in state:
                        state["step"] -= 1
                    raise
                if state:
                    self.state[p] = state
        return loss

    def _step_group(self, group) -> bool:
        """The whole group's update by the backend's group kernel, when it has one and takes this group
        (True); False, with nothing changed, sends the group through the per-parameter path."""
        params, ws, gs = [], [], []
        for p in group["params"]:
            g = _grad_array(p)
            if g is not None:
                params.append(p)
                ws.append(p.data)
                gs.append(g)
        if not ws:
            return True
        fast = backend_of(ws[0]).kernel(self.group_kernel_name)
        if fast is None:
            return False
        states = []
        for p, w in zip(params, ws):
            state = self.state.get(p)
            states.append(self.init_state(w, group) if state is None else state)
        counted = [state for state in states if "step" in state]
        for state in counted:
            state["step"] += 1
        try:
            out = fast(ws, gs, states, group, self.step_scalars(states[0], group))
        except Exception:
            for state in counted:
                state["step"] -= 1
            raise
        if out is None:
            for state in counted:
                state["step"] -= 1
            return False
        if out is not ws:
            raise RuntimeError(
                f"{type(self).__name__}.step: the '{self.group_kernel_name}' kernel of backend {backend_of(ws[0])} "
                "returned something else than the list of parameters it updated in place (xpnet.optim.optimizer)"
            )
        for p, state in zip(params, states):
            if state:
                self.state[p] = state
        return True

    def _check_inputs(self, w, g, state, gi, pi) -> None:
        """Before anything is updated in place: the gradient has the parameter's shape, the
        parameter's array can be written (where the array says, as NumPy's flags do), and the
        gradient and state live where the parameter does (a type and device compare per array)."""
        if g.shape != w.shape:
            raise ValueError(
                f"{type(self).__name__}.step: the gradient of parameter {pi} in group {gi} has shape "
                f"{_shape(g)}, expected {_shape(w)} (the parameter's shape)"
            )
        if not getattr(getattr(w, "flags", None), "writeable", True):
            raise ValueError(
                f"{type(self).__name__}.step: parameter {pi} in group {gi} is a read-only array; a step writes "
                "the new values into the parameter's own array (as PyTorch's): give it a writable copy"
            )
        kind, device = type(w), getattr(w, "device", None)
        suspect = type(g) is not kind or getattr(g, "device", None) != device
        for value in state.values():
            if suspect:
                break
            if type(value) is kind:
                suspect = getattr(value, "device", None) != device
            else:
                suspect = backend_name_of(value) is not None
        if not suspect:
            return
        names, arrays = ["parameter", "gradient"], [w, g]
        for key, value in state.items():
            if backend_name_of(value) is not None:
                names.append(f"state '{key}'")
                arrays.append(value)
        check_same_device(*arrays, op=f"{type(self).__name__}.step, parameter {pi} of group {gi} "
                                      f"(arguments: {', '.join(names)}); after moving a model, move "
                                      "its optimizer too with xpnet.to_device(optimizer, ...)")

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients: drop them (default) or fill them with zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                    continue
                g = _grad_array(p)
                zeros = backend_of(g).xp.zeros_like(g)
                if backend_name_of(p.grad) is not None:
                    p.grad = zeros
                else:
                    p.grad.data = zeros

    # -- state dict ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """PyTorch's layout: ``{'state': {index: {...}}, 'param_groups': [{..., 'params': [indices]}]}``.

        Parameters are numbered in group order from 0. Unlike PyTorch, the state arrays are copies:
        the dict is a snapshot that later steps (which update the state in place) do not change.
        """
        index_of: dict = {}
        groups = []
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            indices = []
            for p in group["params"]:
                index_of.setdefault(id(p), len(index_of))
                indices.append(index_of[id(p)])
            packed["params"] = indices
            groups.append(packed)
        state = {}
        for p, entry in self.state.items():
            if id(p) in index_of:
                state[index_of[id(p)]] = {k: _snapshot(v) for k, v in entry.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what ``state_dict()`` returned (or a PyTorch optimizer's state dict).

        Everything is checked before anything changes: the number of groups, the number of
        parameters in each, and every state array's shape against its parameter's. On a mismatch
        a ValueError names the group and parameter index and the optimizer is left as it was.
        State arrays move to their parameter's backend and device and take its dtype.
        """
        name = type(self).__name__
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError(f"{name}.load_state_dict: expected a dict with 'state' and 'param_groups' keys")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"{name}.load_state_dict: the state dict has {len(saved_groups)} parameter groups, "
                f"this optimizer has {len(self.param_groups)}"
            )
        where: dict = {}  # saved index -> (parameter, group index, position in group)
        for gi, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"{name}.load_state_dict: parameter group {gi} has {len(saved['params'])} parameters "
                    f"in the state dict, {len(group['params'])} in this optimizer"
                )
            for pi, (index, p) in enumerate(zip(saved["params"], group["params"])):
                where[int(index)] = (p, gi, pi)
        new_state: dict = {}
        for key, entry in state_dict["state"].items():
            if int(key) not in where:
                raise ValueError(f"{name}.load_state_dict: state for parameter index {key}, which no group lists")
            p, gi, pi = where[int(key)]
            new_state[p] = {k: _restore_value(k, v, p, gi, pi, name) for k, v in entry.items()}
        new_groups = []
        for group, saved in zip(self.param_groups, saved_groups):
            restored = {k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}
            for key, value in self.defaults.items():
                restored.setdefault(key, value)
            restored["params"] = group["params"]
            new_groups.append(restored)
        self.state = new_state
        self.param_groups = new_groups

    # -- display ------------------------------------------------------------------------------
    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(k for k in group if k != "params"):
                lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


def _snapshot(value):
    if backend_name_of(value) is not None:
        return backend_of(value).xp.asarray(value, copy=True)
    return copy.deepcopy(value)


def _restore_value(key, value, p, gi, pi, name):
    """One state entry, validated against its parameter and moved onto it."""
    if key == "step":
        if backend_name_of(value) is not None or hasattr(value, "data"):
            value = to_numpy(value).reshape(()).item()
        return int(value)
    array = unwrap(value)
    if backend_name_of(array) is None:
        return copy.deepcopy(value)
    w = p.data
    if _shape(array) != _shape(w):
        raise ValueError(
            f"{name}.load_state_dict: state '{key}' of parameter {pi} in group {gi} has shape "
            f"{_shape(array)}, expected {_shape(w)} (the parameter's shape)"
        )
    target = backend_of(w)
    moved = _transfer.to_device(array, backend=target)
    dtype = w.dtype if is_float_dtype(w.dtype) and is_float_dtype(moved.dtype) else moved.dtype
    try:
        # a copy: the state is updated in place and must not alias the caller's dict
        return target.xp.astype(moved, dtype, copy=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{name}.load_state_dict: state '{key}' of parameter {pi} in group {gi} cannot take dtype "
            f"{dtype_name(dtype)}: {exc}"
        ) from None


def _move_optimizer(opt, backend, device):
    """``to_device(optimizer, ...)``: moves the state arrays; the parameters move with their model."""
    for entry in opt.state.values():
        for key, value in entry.items():
            if backend_name_of(value) is not None:
                entry[key] = _transfer.to_device(value, backend=backend, device=device)
    return opt


register_transfer(Optimizer, _move_optimizer)


def effective_grad(w, g, weight_decay, maximize):
    """``(d, owned)`` with d = ±g + λ w (minus for maximize, λ = weight_decay; PyTorch's L2 form).

    ``owned`` says whether d is a fresh array the caller may overwrite; when it is False, d is the
    caller's gradient itself and must be left alone.
    """
    if weight_decay != 0:
        d = w * weight_decay
        if maximize:
            d -= g
        else:
            d += g
        return d, True
    if maximize:
        return -g, True
    return g, False


def average_squares_(v, x, decay):
    """v <- decay v + (1 - decay) x * x, in place and in PyTorch's order of operations (v scaled,
    then the scaled squares added): the squared-gradient averages of RMSprop, Adadelta and the Adam
    family. Returns v."""
    v *= decay
    sq = x * x
    sq *= 1 - decay
    v += sq
    return v
