"""Binary logistic regression: cross-entropy or squared loss, Newton's method or gradient descent."""

from __future__ import annotations

from array_api_compat import array_namespace

from . import _solvers
from .base import (
    BaseEstimator,
    ClassifierMixin,
    add_ones_column,
    check_choice,
    check_positive,
    check_predict_X,
    check_X,
    check_y_classes,
    largest_eigenvalue_gram,
    sigmoid,
)

# sup over z and y in {0, 1} of |d^2/dz^2 (1/2)(sigmoid(z) - y)^2| is 0.077 (at sigmoid = 0.386)
_MSE_CURVATURE = 1.0 / 12.0
_BCE_CURVATURE = 0.25  # sup of sigmoid'(z)


class LogisticRegression(ClassifierMixin, BaseEstimator):
    """p(y=1 | x) = sigmoid(w.x + b) for two classes.

    Minimises the mean loss plus an L2 penalty on w (never on b), scaled as scikit-learn's
    objective C * sum(loss) + ||w||^2 / 2 divided by C n, so C has scikit-learn's meaning:

        J(w, b) = (1/n) sum_i loss(z_i, y_i) + (lambda / 2) ||w||^2,  z = X w + b,  lambda = 1/(C n)

    ``loss='bce'``: loss = log(1 + e^z) - y z (cross-entropy), dJ/dz_i = (p_i - y_i) / n.
    ``loss='mse'``: loss = (p - y)^2 / 2 with p = sigmoid(z), dJ/dz_i = (p_i - y_i) p_i (1 - p_i) / n.
    With Z = [X, 1] and theta = [w, b]: dJ/dtheta = Z^T dJ/dz + lambda [w, 0].

    ``solver='newton'``: Newton's method with the explicit Hessian H = Z^T S Z / n + lambda diag(1..1, 0),
        S = diag(p (1 - p)) for 'bce'; for 'mse' the Gauss-Newton S = diag((p (1 - p))^2), since the
        exact Hessian of the squared loss is indefinite away from the optimum. A backtracking line
        search keeps each step downhill. Converges in a few iterations (default max_iter 100).
    ``solver='gd'``: gradient descent; ``lr='auto'`` is 1/L with L = c lambda_max(Z^T Z)/n + lambda,
        c = 1/4 ('bce') or 1/12 ('mse') the largest curvature of the loss in z (default max_iter 1000).
    Both stop when max |dJ/dtheta| <= tol.

    ``penalty=None`` drops the L2 term (scikit-learn's ``penalty=None``); on separable data the
    weights then grow until max_iter. Labels may be any two values; ``classes_[1]`` is the positive
    class. After fit: ``coef_`` (1, n_features), ``intercept_`` (1,), ``classes_``, ``n_iter_``.
    """

    def __init__(self, loss="bce", solver="newton", C=1.0, penalty="l2", max_iter=None, tol=1e-6,
                 fit_intercept=True, lr="auto"):
        self.loss = loss
        self.solver = solver
        self.C = C
        self.penalty = penalty
        self.max_iter = max_iter
        self.tol = tol
        self.fit_intercept = fit_intercept
        self.lr = lr

    def fit(self, X, y):
        who = "LogisticRegression.fit"
        check_choice(who, "loss", self.loss, ("bce", "mse"))
        check_choice(who, "solver", self.solver, ("newton", "gd"))
        check_choice(who, "penalty", self.penalty, ("l2", None))
        check_positive(who, "C", self.C)
        X = check_X(X, who)
        classes, codes = check_y_classes(y, X, who)
        if classes.shape[0] != 2:
            raise ValueError(f"{who}: LogisticRegression is binary, y has {classes.shape[0]} classes; "
                             f"use SoftmaxRegression for more")
        xp = array_namespace(X)
        n, d = X.shape
        Z = add_ones_column(X) if self.fit_intercept else X
        target = xp.astype(codes, X.dtype)
        lam = 1.0 / (self.C * n) if self.penalty == "l2" else 0.0
        # the penalty reaches the weights, never the intercept (the last column of Z)
        mask = xp.astype(xp.arange(Z.shape[1], device=Z.device) < d, X.dtype)
        mse = self.loss == "mse"
        eye = xp.eye(Z.shape[1], dtype=X.dtype, device=X.device)

        def objective(theta):
            z = Z @ theta
            p = sigmoid(z)
            if mse:
                loss = 0.5 * xp.mean((p - target) ** 2)
                dz = (p - target) * p * (1.0 - p) / n
            else:
                loss = xp.mean(xp.logaddexp(xp.zeros_like(z), z) - target * z)
                dz = (p - target) / n
            return loss + 0.5 * lam * xp.sum(mask * theta ** 2), Z.mT @ dz + lam * mask * theta

        def hessian(theta):
            p = sigmoid(Z @ theta)
            s = p * (1.0 - p)
            if mse:
                s = s * s
            return Z.mT @ (s[:, None] * Z) / n + lam * mask[:, None] * eye

        theta0 = xp.zeros((Z.shape[1],), dtype=X.dtype, device=X.device)
        if self.solver == "newton":
            max_iter = 100 if self.max_iter is None else self.max_iter
            theta, n_iter = _solvers.newton(objective, hessian, theta0, max_iter, self.tol, who)
        else:
            max_iter = 1000 if self.max_iter is None else self.max_iter
            if self.lr == "auto":
                c = _MSE_CURVATURE if mse else _BCE_CURVATURE
                lr = 1.0 / (c * largest_eigenvalue_gram(Z) / n + lam)
            else:
                lr = self.lr
            theta, n_iter = _solvers.gradient_descent(objective, theta0, lr, max_iter, self.tol, who)
        self.coef_ = xp.reshape(theta[:d], (1, d))
        self.intercept_ = theta[d:] if self.fit_intercept else xp.zeros((1,), dtype=X.dtype,
                                                                           device=X.device)
        self.classes_ = classes
        self.n_iter_ = n_iter
        self.n_features_in_ = d
        return self

    def decision_function(self, X):
        """z = X w + b, shape (n,); positive means ``classes_[1]``."""
        X = check_predict_X(self, X, "LogisticRegression.decision_function", "coef_")
        return X @ self.coef_[0, :] + self.intercept_[0]

    def predict_proba(self, X):
        """(n, 2): columns p(classes_[0] | x) = 1 - sigmoid(z) and p(classes_[1] | x) = sigmoid(z)."""
        p = sigmoid(self.decision_function(X))
        xp = array_namespace(p)
        return xp.stack([1.0 - p, p], axis=1)

    def predict(self, X):
        z = self.decision_function(X)
        xp = array_namespace(z)
        positive = xp.astype(z > 0, xp.int64)
        return xp.take(self.classes_, positive, axis=0)
