"""The two smooth minimisers the linear classifiers share: Newton's method and gradient descent.

Both work on raw arrays with hand-written gradients: ``objective(theta) -> (J, dJ/dtheta)`` where J
is a 0-d array, and for Newton ``hessian(theta) -> H``, the (P, P) matrix of second derivatives for
theta flattened in row-major order.
"""

from __future__ import annotations

from array_api_compat import array_namespace

from .base import check_max_iter, check_positive, warn_not_converged


def _max_abs(a) -> float:
    xp = array_namespace(a)
    return float(xp.max(xp.abs(a)))


def _check_finite_value(value: float, who: str, what: str) -> None:
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{who}: {what} became NaN or infinite; scale the features or lower lr")


def newton(objective, hessian, theta, max_iter, tol, who):
    """Newton's method with a backtracking (Armijo) line search.

    Step: solve H d = g (``xp.linalg.solve``), theta <- theta - t d with t halved from 1 until
    J(theta - t d) <= J(theta) - 1e-4 t g.d. Stops when max|g| <= tol. Returns (theta, n_iter).
    """
    xp = array_namespace(theta)
    check_max_iter(who, max_iter)
    check_positive(who, "tol", tol, allow_zero=True)
    shape = theta.shape
    J, g = objective(theta)
    for it in range(1, max_iter + 1):
        if _max_abs(g) <= tol:
            return theta, it - 1
        H = hessian(theta)
        try:
            d = xp.reshape(xp.linalg.solve(H, xp.reshape(g, (-1, 1))), shape)
        except Exception as exc:  # LinAlgError: the Hessian is singular
            raise ValueError(f"{who}: the Hessian is singular (collinear or constant features, or "
                             f"no penalty on separable data); use penalty='l2' or solver='gd'") from exc
        decrease = float(xp.sum(g * d))
        _check_finite_value(decrease, who, "the Newton step")
        J_now = float(J)
        t = 1.0
        for _ in range(40):
            candidate = theta - t * d
            J_new, g_new = objective(candidate)
            if float(J_new) <= J_now - 1e-4 * t * decrease:
                break
            t *= 0.5
        else:
            # no step lowers J any further: theta is optimal to machine precision
            return theta, it
        theta, J, g = candidate, J_new, g_new
    if _max_abs(g) > tol:
        warn_not_converged(who, max_iter, f" (max |gradient| {_max_abs(g):.3g} > tol={tol})")
    return theta, max_iter


def gradient_descent(objective, theta, lr, max_iter, tol, who):
    """theta <- theta - lr * dJ/dtheta until max|dJ/dtheta| <= tol. Returns (theta, n_iter)."""
    check_max_iter(who, max_iter)
    check_positive(who, "tol", tol, allow_zero=True)
    check_positive(who, "lr", lr)
    _, g = objective(theta)
    for it in range(1, max_iter + 1):
        size = _max_abs(g)
        _check_finite_value(size, who, "the gradient")
        if size <= tol:
            return theta, it - 1
        theta = theta - lr * g
        _, g = objective(theta)
    size = _max_abs(g)
    _check_finite_value(size, who, "the gradient")
    if size > tol:
        warn_not_converged(who, max_iter, f" (max |gradient| {size:.3g} > tol={tol})")
    return theta, max_iter
