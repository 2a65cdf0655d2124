"""What every classic estimator shares: parameters, input checks, label encoding, scores.

Estimators follow scikit-learn's conventions: hyper-parameters are the keyword arguments of
``__init__`` stored unchanged as attributes; learned state ends in an underscore (``coef_``) and
appears in ``fit``. Arrays go in and come out in the namespace and on the device of the input, and
every error names the estimator and method (``LogisticRegression.fit: ...``).
"""

from __future__ import annotations

import inspect
import math
import warnings

from array_api_compat import array_namespace
from array_api_compat import device as array_device

from ..backends import HostRNG, backend_name_of, backend_of, check_same_device, get_backend
from ..backends.dtypes import get_default_dtype, resolve_dtype


class NotFittedError(ValueError, AttributeError):
    """An estimator was used before ``fit`` (a ValueError, as in scikit-learn)."""


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped at ``max_iter`` before meeting its tolerance."""


# -- parameters ------------------------------------------------------------------------------------


class BaseEstimator:
    """``get_params`` / ``set_params`` / ``repr`` read from the ``__init__`` signature.

    Subclasses list every hyper-parameter as an explicit keyword of ``__init__`` and store it
    unchanged under the same name (no ``*args`` / ``**kwargs``), exactly as in scikit-learn, so
    ``clone`` can rebuild an unfitted copy from ``get_params()``.
    """

    @classmethod
    def _param_names(cls) -> list:
        init = cls.__init__
        if init is object.__init__:
            return []
        names = []
        for p in inspect.signature(init).parameters.values():
            if p.name == "self":
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{cls.__name__}.__init__ must list its parameters explicitly, "
                                f"found *{p.name}")
            names.append(p.name)
        return sorted(names)

    def get_params(self, deep: bool = True) -> dict:
        """Hyper-parameters by name; with ``deep``, a nested estimator's as ``estimator__name``."""
        out = {}
        for name in self._param_names():
            value = getattr(self, name)
            out[name] = value
            if deep and isinstance(value, BaseEstimator):
                for sub, sub_value in value.get_params(deep=True).items():
                    out[f"{name}__{sub}"] = sub_value
        return out

    def set_params(self, **params):
        """Set hyper-parameters (``estimator__C=10`` reaches into a nested estimator); returns self."""
        valid = self._param_names()
        nested: dict = {}
        for key, value in params.items():
            name, sep, sub = key.partition("__")
            if name not in valid:
                raise ValueError(f"{type(self).__name__}.set_params: unknown parameter {name!r}; "
                                 f"valid parameters are {valid}")
            if sep:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub_params in nested.items():
            target = getattr(self, name)
            if not isinstance(target, BaseEstimator):
                raise ValueError(f"{type(self).__name__}.set_params: {name!r} is not an estimator, "
                                 f"cannot set {sorted(sub_params)} on it")
            target.set_params(**sub_params)
        return self

    def __repr__(self):
        defaults = {}
        for p in inspect.signature(type(self).__init__).parameters.values():
            if p.default is not p.empty:
                defaults[p.name] = p.default
        shown = []
        for name in self._param_names():
            value = getattr(self, name)
            if name in defaults and _same_value(value, defaults[name]):
                continue
            shown.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


def _same_value(a, b) -> bool:
    if isinstance(a, BaseEstimator) or isinstance(b, BaseEstimator):
        return a is b
    try:
        return bool(a == b) and type(a) is type(b)
    except (TypeError, ValueError):
        return False


def clone(estimator):
    """An unfitted copy with the same hyper-parameters (nested estimators are cloned too)."""
    if not isinstance(estimator, BaseEstimator):
        raise TypeError(f"clone: expected an xpnet.classic estimator, got {type(estimator).__name__}")
    params = {name: clone(value) if isinstance(value, BaseEstimator) else value
              for name, value in estimator.get_params(deep=False).items()}
    return type(estimator)(**params)


# -- input checks ----------------------------------------------------------------------------------


def as_backend_array(obj, who: str, what: str, like=None):
    """``obj`` as an array of a supported backend: arrays pass, Tensors give their ``.data``, and
    Python sequences are built on ``like``'s backend and device (else on the current backend)."""
    if backend_name_of(obj) is not None:
        return obj
    data = getattr(obj, "data", None)
    if data is not None and backend_name_of(data) is not None:
        return data
    if isinstance(obj, (list, tuple, int, float)):
        backend = backend_of(like) if like is not None else get_backend()
        return backend.asarray(obj)
    raise TypeError(f"{who}: {what} must be an array (numpy, cupy, array_api_strict or torch) or an "
                    f"xpnet Tensor, got {type(obj).__name__}")


def _check_finite(xp, a, who, what):
    if xp.isdtype(a.dtype, "real floating") and not bool(xp.all(xp.isfinite(a))):
        raise ValueError(f"{who}: {what} contains NaN or infinity")


def check_X(X, who: str):
    """A 2-D floating array (n_samples >= 1, n_features >= 1) with finite values.

    Integer or boolean X is converted to xpnet's default float dtype (``get_default_dtype()``).
    """
    X = as_backend_array(X, who, "X")
    xp = array_namespace(X)
    if X.ndim != 2:
        raise ValueError(f"{who}: X must be 2-D (n_samples, n_features), got shape {tuple(X.shape)}")
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"{who}: X must have at least one sample and one feature, got shape "
                         f"{tuple(X.shape)}")
    if not xp.isdtype(X.dtype, "real floating"):
        if xp.isdtype(X.dtype, "complex floating"):
            raise ValueError(f"{who}: X must be real, got dtype {X.dtype}")
        X = xp.astype(X, resolve_dtype(xp, get_default_dtype()))
    _check_finite(xp, X, who, "X")
    return X


def check_same_length(who: str, X, *others) -> None:
    for what, arr in others:
        if arr.shape[0] != X.shape[0]:
            raise ValueError(f"{who}: X has {X.shape[0]} samples but {what} has {arr.shape[0]}")


def check_y_regression(y, X, who: str):
    """Targets of shape (n,) or (n, n_targets), in X's dtype, on X's device."""
    y = as_backend_array(y, who, "y", like=X)
    check_same_device(X, y, op=who)
    xp = array_namespace(X)
    if y.ndim not in (1, 2):
        raise ValueError(f"{who}: y must be 1-D (n_samples,) or 2-D (n_samples, n_targets), got "
                         f"shape {tuple(y.shape)}")
    check_same_length(who, X, ("y", y))
    if y.dtype != X.dtype:
        y = xp.astype(y, X.dtype)
    _check_finite(xp, y, who, "y")
    return y


def check_y_classes(y, X, who: str, min_classes: int = 2):
    """Class labels of shape (n,) -> (classes, codes): ``classes`` sorted unique labels (y's dtype),
    ``codes`` int64 indices into ``classes``. Fewer than ``min_classes`` distinct labels is an error.
    """
    y = as_backend_array(y, who, "y", like=X)
    check_same_device(X, y, op=who)
    xp = array_namespace(X)
    if y.ndim == 2 and y.shape[1] == 1:
        y = xp.reshape(y, (-1,))
    if y.ndim != 1:
        raise ValueError(f"{who}: y must be 1-D (n_samples,) of class labels, got shape "
                         f"{tuple(y.shape)}")
    check_same_length(who, X, ("y", y))
    _check_finite(xp, y, who, "y")
    # unique_values does not promise an order; sorting makes classes_ match scikit-learn's
    classes = xp.sort(xp.unique_values(y))
    if classes.shape[0] < min_classes:
        only = ", ".join(str(v) for v in to_python_list(classes))
        raise ValueError(f"{who}: y needs at least {min_classes} classes, got {classes.shape[0]} "
                         f"({only})")
    codes = xp.astype(xp.searchsorted(classes, y), xp.int64)
    return classes, codes


def check_predict_X(est, X, who: str, reference: str):
    """X checked for predict: the estimator is fitted, X is 2-D, finite, has fit's n_features and
    lives on the device of the fitted array ``getattr(est, reference)`` (cast to its dtype)."""
    check_fitted(est, who)
    reference = getattr(est, reference)
    X = check_X(X, who)
    if X.shape[1] != est.n_features_in_:
        raise ValueError(f"{who}: X has {X.shape[1]} features, but {type(est).__name__} was fitted "
                         f"with {est.n_features_in_}")
    check_same_device(X, reference, op=who)
    if X.dtype != reference.dtype and array_namespace(reference).isdtype(reference.dtype,
                                                                          "real floating"):
        X = array_namespace(X).astype(X, reference.dtype)
    return X


def check_fitted(est, who: str) -> None:
    if not hasattr(est, "n_features_in_"):
        raise NotFittedError(f"{who}: this {type(est).__name__} is not fitted yet; call fit(X, y) first")


def check_choice(who: str, name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{who}: {name} must be one of {list(choices)}, got {value!r}")


def check_positive(who: str, name: str, value, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{who}: {name} must be a finite number {bound}, got {value!r}")


def check_max_iter(who: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{who}: max_iter must be an int >= 1, got {value!r}")


# -- small array helpers ---------------------------------------------------------------------------


def to_python_list(a) -> list:
    """A short 1-D array as Python numbers (for messages and host-side bookkeeping)."""
    xp = array_namespace(a)
    if xp.isdtype(a.dtype, "integral") or xp.isdtype(a.dtype, "bool"):
        return [int(a[i]) for i in range(a.shape[0])]
    return [float(a[i]) for i in range(a.shape[0])]


def one_hot(codes, n_classes: int, dtype):
    """(n,) int codes -> (n, n_classes) one-hot matrix of ``dtype`` on the codes' device."""
    xp = array_namespace(codes)
    cols = xp.arange(n_classes, dtype=codes.dtype, device=array_device(codes))
    return xp.astype(codes[:, None] == cols[None, :], dtype)


def logsumexp(a, axis: int = -1, keepdims: bool = False):
    """log(sum(exp(a))) along ``axis``, shifted by the maximum so that nothing overflows."""
    xp = array_namespace(a)
    m = xp.max(a, axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    out = xp.log(xp.sum(xp.exp(a - m), axis=axis, keepdims=True)) + m
    return out if keepdims else xp.squeeze(out, axis=axis)


def sigmoid(z):
    """1 / (1 + e^-z) evaluated through e^-|z|, which never overflows."""
    xp = array_namespace(z)
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def add_ones_column(X):
    """[X, 1]: the design matrix whose last weight is the intercept."""
    xp = array_namespace(X)
    return xp.concat([X, xp.ones((X.shape[0], 1), dtype=X.dtype, device=array_device(X))], axis=1)


def largest_eigenvalue_gram(X) -> float:
    """lambda_max(X^T X): the curvature bound that sets gradient descent's step 1/L."""
    xp = array_namespace(X)
    return float(xp.max(xp.linalg.eigvalsh(X.mT @ X)))


def host_rng(random_state, like):
    """The generator for ``random_state``: an int seeds a fresh NumPy PCG64 stream (drawn on the
    host and uploaded, so every backend gets the same numbers); None uses the seeded generator of
    ``like``'s backend (see ``xpnet.manual_seed``); a generator object is used as it is."""
    if random_state is None:
        return backend_of(like).rng
    if isinstance(random_state, HostRNG):
        return random_state
    if isinstance(random_state, int) and not isinstance(random_state, bool) and random_state >= 0:
        return HostRNG(backend_of(like), random_state)
    raise ValueError(f"random_state must be None, an int >= 0 or an xpnet generator, got "
                     f"{random_state!r}")


def warn_not_converged(who: str, max_iter: int, detail: str = "") -> None:
    warnings.warn(f"{who}: did not converge in max_iter={max_iter} iterations{detail}; raise "
                  f"max_iter, or scale the features", ConvergenceWarning, stacklevel=3)


# -- scores ----------------------------------------------------------------------------------------


class ClassifierMixin:
    """``score`` is the accuracy of ``predict`` (a Python float, as in scikit-learn)."""

    _estimator_type = "classifier"

    def score(self, X, y) -> float:
        who = f"{type(self).__name__}.score"
        pred = self.predict(X)
        y = as_backend_array(y, who, "y", like=pred)
        check_same_device(pred, y, op=who)
        if y.ndim != 1 or y.shape[0] != pred.shape[0]:
            raise ValueError(f"{who}: y must have shape ({pred.shape[0]},), got {tuple(y.shape)}")
        xp = array_namespace(pred)
        return int(xp.sum(xp.astype(pred == y, xp.int64))) / pred.shape[0]


class RegressorMixin:
    """``score`` is the coefficient of determination R^2 = 1 - SS_res / SS_tot (averaged over
    targets), a Python float as in scikit-learn."""

    _estimator_type = "regressor"

    def score(self, X, y) -> float:
        who = f"{type(self).__name__}.score"
        pred = self.predict(X)
        y = as_backend_array(y, who, "y", like=pred)
        check_same_device(pred, y, op=who)
        xp = array_namespace(pred)
        y = xp.astype(y, pred.dtype) if y.dtype != pred.dtype else y
        if tuple(y.shape) != tuple(pred.shape):
            raise ValueError(f"{who}: y must have shape {tuple(pred.shape)}, got {tuple(y.shape)}")
        ss_res = xp.sum((y - pred) ** 2, axis=0)
        ss_tot = xp.sum((y - xp.mean(y, axis=0)) ** 2, axis=0)
        # a constant target: scikit-learn scores a perfect fit 1 and anything else 0
        r2 = xp.where(ss_tot > 0, 1.0 - ss_res / xp.where(ss_tot > 0, ss_tot, 1.0),
                      xp.astype(ss_res == 0, ss_res.dtype))
        return float(xp.mean(r2))


def is_classifier(est) -> bool:
    return getattr(est, "_estimator_type", None) == "classifier"
