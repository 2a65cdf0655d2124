"""Multinomial (softmax) logistic regression with an L2 penalty."""

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
    logsumexp,
    one_hot,
)


class SoftmaxRegression(ClassifierMixin, BaseEstimator):
    """p(y=k | x) = softmax(x W + b)_k for K >= 2 classes (scikit-learn's multinomial
    LogisticRegression: same objective, same C).

    With Z = [X, 1] (n, D+1), Theta = [W; b] (D+1, K), S = Z Theta, P = softmax(S) row-wise, Y the
    one-hot targets and lambda = 1/(C n):

        J = -(1/n) sum_i sum_k Y_ik log P_ik + (lambda / 2) ||W||^2       (b is not penalised)
        dJ/dTheta = Z^T (P - Y) / n + lambda [W; 0]

    ``solver='newton'``: the Hessian block of classes (j, k) is
        Z^T diag(P_j (delta_jk - P_k)) Z / n + delta_jk lambda diag(1..1, 0),
    a (K (D+1))^2 matrix: fine for the course's data sets, too big for e.g. MNIST (use 'gd').
    Softmax is unchanged when one vector is added to every class's weights, so that Hessian is
    singular along those directions; the gradient never points along them, and adding
    (1/K) 1 1^T (x) I on them makes the system solvable without changing the step.
    ``solver='gd'``: gradient descent, ``lr='auto'`` = 1/L with L = lambda_max(Z^T Z)/(2n) + lambda
    (the softmax Hessian in the scores is bounded by 1/2).
    Defaults: max_iter 100 for 'newton', 1000 for 'gd'; both stop when max |dJ/dTheta| <= tol.

    After fit: ``coef_`` (K, n_features), ``intercept_`` (K,), ``classes_``, ``n_iter_``.
    """

    def __init__(self, C=1.0, penalty="l2", solver="newton", max_iter=None, tol=1e-6,
                 fit_intercept=True, lr="auto"):
        self.C = C
        self.penalty = penalty
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.fit_intercept = fit_intercept
        self.lr = lr

    def fit(self, X, y):
        who = "SoftmaxRegression.fit"
        check_choice(who, "solver", self.solver, ("newton", "gd"))
        check_choice(who, "penalty", self.penalty, ("l2", None))
        check_positive(who, "C", self.C)
        X = check_X(X, who)
        classes, codes = check_y_classes(y, X, who)
        xp = array_namespace(X)
        n, d = X.shape
        k = classes.shape[0]
        Z = add_ones_column(X) if self.fit_intercept else X
        p_dim = Z.shape[1]
        Y = one_hot(codes, k, X.dtype)
        lam = 1.0 / (self.C * n) if self.penalty == "l2" else 0.0
        mask = xp.astype(xp.arange(p_dim, device=X.device) < d, X.dtype)[:, None]

        def objective(theta):
            S = Z @ theta
            log_p = S - logsumexp(S, axis=1, keepdims=True)
            loss = -xp.sum(Y * log_p) / n
            grad = Z.mT @ (xp.exp(log_p) - Y) / n + lam * mask * theta
            return loss + 0.5 * lam * xp.sum(mask * theta ** 2), grad

        eye = xp.eye(p_dim, dtype=X.dtype, device=X.device)
        # any positive weight works on the null directions; the mean feature scale keeps H balanced
        null_weight = float(xp.sum(Z * Z)) / (n * p_dim) / k

        def hessian(theta):
            S = Z @ theta
            P = xp.exp(S - logsumexp(S, axis=1, keepdims=True))
            rows = []
            for a in range(k):
                row = []
                for b in range(k):
                    w = P[:, a] * ((1.0 if a == b else 0.0) - P[:, b]) / n
                    block = Z.mT @ (w[:, None] * Z) + null_weight * eye
                    if a == b:
                        block = block + lam * mask * eye
                    row.append(block)
                rows.append(xp.stack(row, axis=0))
            blocks = xp.stack(rows, axis=0)  # (K, K, D+1, D+1): [class a, class b, feature i, feature j]
            # theta (D+1, K) flattens row-major: index i*K + a, so H is [i, a, j, b]
            return xp.reshape(xp.permute_dims(blocks, (2, 0, 3, 1)), (p_dim * k, p_dim * k))

        theta0 = xp.zeros((p_dim, k), dtype=X.dtype, device=X.device)
        if self.solver == "newton":
            max_iter = 100 if self.max_iter is None else self.max_iter
            theta, n_iter = _solvers.newton(objective, hessian, theta0, max_iter, self.tol, who)
        else:
            max_iter = 1000 if self.max_iter is None else self.max_iter
            lr = 1.0 / (0.5 * largest_eigenvalue_gram(Z) / n + lam) if self.lr == "auto" else self.lr
            theta, n_iter = _solvers.gradient_descent(objective, theta0, lr, max_iter, self.tol, who)
        self.coef_ = theta[:d, :].mT
        if self.fit_intercept:
            self.intercept_ = theta[d, :]
        else:
            self.intercept_ = xp.zeros((k,), dtype=X.dtype, device=X.device)
        self.classes_ = classes
        self.n_iter_ = n_iter
        self.n_features_in_ = d
        return self

    def decision_function(self, X):
        """The class scores x W + b, shape (n, K)."""
        X = check_predict_X(self, X, "SoftmaxRegression.decision_function", "coef_")
        return X @ self.coef_.mT + self.intercept_

    def predict_log_proba(self, X):
        S = self.decision_function(X)
        return S - logsumexp(S, axis=1, keepdims=True)

    def predict_proba(self, X):
        """softmax of the scores, shape (n, K), columns in the order of ``classes_``."""
        log_proba = self.predict_log_proba(X)
        return array_namespace(log_proba).exp(log_proba)

    def predict(self, X):
        scores = self.decision_function(X)
        xp = array_namespace(scores)
        return xp.take(self.classes_, xp.argmax(scores, axis=1), axis=0)
