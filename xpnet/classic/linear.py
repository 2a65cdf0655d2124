"""Least squares and ridge regression: the normal equations or gradient descent."""

from __future__ import annotations

from array_api_compat import array_namespace
from array_api_compat import device as array_device

from .base import (
    BaseEstimator,
    RegressorMixin,
    check_choice,
    check_max_iter,
    check_positive,
    check_predict_X,
    check_X,
    check_y_regression,
    largest_eigenvalue_gram,
    warn_not_converged,
)


class LinearRegression(RegressorMixin, BaseEstimator):
    """Least squares, ridge when ``alpha > 0``: minimise ||y - X w - b||^2 + alpha ||w||^2.

    The intercept b is not penalised (as in scikit-learn's Ridge): with ``fit_intercept`` the
    columns of X and y are centred, w is found on the centred data and b = mean(y) - mean(X) w.

    ``solver='normal'``: the normal equations (Xc^T Xc + alpha I) w = Xc^T yc, solved with
        ``xp.linalg.solve`` (no explicit inverse).
    ``solver='gd'``: full-batch gradient descent on J(w) = (1/2n)(||Xc w - yc||^2 + alpha ||w||^2),
        gradient dJ/dw = (Xc^T (Xc w - yc) + alpha w) / n. ``lr='auto'`` takes the step 1/L with
        L = (lambda_max(Xc^T Xc) + alpha) / n, the curvature bound under which each step lowers J.
        Stops when no weight moves by more than ``tol * max(1, max|w|)``.

    y may be (n,) or (n, n_targets). After fit: ``coef_`` (n_features,) or (n_targets, n_features),
    ``intercept_`` (0-d or (n_targets,)), ``n_iter_`` (gd only), ``n_features_in_``.
    """

    def __init__(self, solver="normal", alpha=0.0, fit_intercept=True, lr="auto", max_iter=1000,
                 tol=1e-6):
        self.solver = solver
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.lr = lr
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X, y):
        who = "LinearRegression.fit"
        check_choice(who, "solver", self.solver, ("normal", "gd"))
        check_positive(who, "alpha", self.alpha, allow_zero=True)
        X = check_X(X, who)
        y = check_y_regression(y, X, who)
        xp = array_namespace(X)
        Y = y[:, None] if y.ndim == 1 else y
        if self.fit_intercept:
            x_mean = xp.mean(X, axis=0)
            y_mean = xp.mean(Y, axis=0)
            Xc, Yc = X - x_mean, Y - y_mean
        else:
            x_mean = xp.zeros((X.shape[1],), dtype=X.dtype, device=array_device(X))
            y_mean = xp.zeros((Y.shape[1],), dtype=X.dtype, device=array_device(X))
            Xc, Yc = X, Y
        if self.solver == "normal":
            W = self._solve_normal(Xc, Yc, who)
        else:
            W = self._gradient_descent(Xc, Yc, who)
        intercept = y_mean - x_mean @ W
        if y.ndim == 1:
            self.coef_ = W[:, 0]
            self.intercept_ = intercept[0]
        else:
            self.coef_ = W.mT
            self.intercept_ = intercept
        self.n_features_in_ = X.shape[1]
        return self

    def _solve_normal(self, Xc, Yc, who):
        xp = array_namespace(Xc)
        gram = Xc.mT @ Xc
        if self.alpha > 0:
            gram = gram + self.alpha * xp.eye(Xc.shape[1], dtype=Xc.dtype, device=array_device(Xc))
        rhs = Xc.mT @ Yc
        # LU may not meet an exact zero pivot in floating point: judge singularity by the spectrum
        spectrum = xp.linalg.eigvalsh(gram)
        if float(xp.min(spectrum)) <= float(xp.max(spectrum)) * gram.shape[0] * xp.finfo(gram.dtype).eps:
            raise ValueError(self._singular_message(who))
        try:
            W = xp.linalg.solve(gram, rhs)
        except Exception as exc:  # numpy and strict raise LinAlgError on a singular system
            raise ValueError(self._singular_message(who)) from exc
        if not bool(xp.all(xp.isfinite(W))):  # cupy returns NaN instead of raising
            raise ValueError(self._singular_message(who))
        self.n_iter_ = None
        return W

    @staticmethod
    def _singular_message(who):
        return (f"{who}: X^T X is singular (collinear or constant features, or fewer samples than "
                f"features); use alpha > 0 or solver='gd'")

    def _gradient_descent(self, Xc, Yc, who):
        xp = array_namespace(Xc)
        check_max_iter(who, self.max_iter)
        check_positive(who, "tol", self.tol, allow_zero=True)
        n = Xc.shape[0]
        if self.lr == "auto":
            curvature = (largest_eigenvalue_gram(Xc) + self.alpha) / n
            lr = 1.0 / curvature if curvature > 0 else 1.0
        else:
            check_positive(who, "lr", self.lr)
            lr = float(self.lr)
        W = xp.zeros((Xc.shape[1], Yc.shape[1]), dtype=Xc.dtype, device=array_device(Xc))
        for it in range(1, self.max_iter + 1):
            grad = (Xc.mT @ (Xc @ W - Yc) + self.alpha * W) / n
            step = lr * grad
            W = W - step
            moved = float(xp.max(xp.abs(step)))
            if moved != moved or moved == float("inf"):
                raise ValueError(f"{who}: gradient descent diverged (lr={self.lr!r} is too large)")
            if moved <= self.tol * max(1.0, float(xp.max(xp.abs(W)))):
                break
        else:
            warn_not_converged(who, self.max_iter)
        self.n_iter_ = it
        return W

    def predict(self, X):
        """X w + b: shape (n,) for a 1-D target, (n, n_targets) otherwise."""
        X = check_predict_X(self, X, "LinearRegression.predict", "coef_")
        if self.coef_.ndim == 1:
            return X @ self.coef_ + self.intercept_
        return X @ self.coef_.mT + self.intercept_
