"""Linear support-vector classifier: the hinge loss minimised by subgradient descent."""

from __future__ import annotations

from array_api_compat import array_namespace

from .base import (
    BaseEstimator,
    ClassifierMixin,
    add_ones_column,
    check_max_iter,
    check_positive,
    check_predict_X,
    check_X,
    check_y_classes,
)
from .perceptron import ovr_predict, ovr_targets


class LinearSVC(ClassifierMixin, BaseEstimator):
    """Soft-margin linear SVM: minimise (1/2) ||w||^2 + C sum_i max(0, 1 - t_i (w.x_i + b)).

    Divided by C n, with lambda = 1/(C n), Z = [X, 1], theta = [w, b] and margins m = t * (Z theta):

        J = (1/n) sum_i max(0, 1 - m_i) + (lambda / 2) ||w||^2          (b is not penalised)
        a subgradient: g = -(1/n) Z^T (t * [m < 1]) + lambda [w, 0]

    Full-batch subgradient descent with the step lr_k = lr / (1 + lr lambda k), k = 1, 2, ...: it
    starts at lr and decays as 1/(lambda k), the rate for a lambda-strongly convex objective (Pegasos'
    schedule without its huge first steps). J is not differentiable where m_i = 1 and need not fall
    every step, so the iterate with the lowest J seen is kept. Stops after ``max_iter`` steps, or
    once the best J has improved by less than ``tol * |J|`` over the last ``n_iter_no_change`` steps.
    With K > 2 classes, K classifiers (class k against the rest) are trained at once; t is +1 / -1.

    This is the hinge loss with an unpenalised intercept, i.e. the textbook SVM; scikit-learn's
    LinearSVC defaults to the squared hinge and penalises its intercept, so compare with
    ``sklearn.svm.LinearSVC(loss='hinge')`` or ``sklearn.svm.SVC(kernel='linear')``.
    After fit: ``coef_`` (1 or K, n_features), ``intercept_``, ``classes_``, ``n_iter_``.
    """

    def __init__(self, C=1.0, fit_intercept=True, lr=1.0, max_iter=1000, tol=1e-5,
                 n_iter_no_change=50):
        self.C = C
        self.fit_intercept = fit_intercept
        self.lr = lr
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change

    def fit(self, X, y):
        who = "LinearSVC.fit"
        check_positive(who, "C", self.C)
        check_positive(who, "lr", self.lr)
        check_positive(who, "tol", self.tol, allow_zero=True)
        check_max_iter(who, self.max_iter)
        X = check_X(X, who)
        classes, codes = check_y_classes(y, X, who)
        xp = array_namespace(X)
        n, d = X.shape
        T = ovr_targets(codes, classes.shape[0], X.dtype)
        Z = add_ones_column(X) if self.fit_intercept else X
        lam = 1.0 / (self.C * n)
        mask = xp.astype(xp.arange(Z.shape[1], device=X.device) < d, X.dtype)[:, None]
        theta = xp.zeros((Z.shape[1], T.shape[1]), dtype=X.dtype, device=X.device)
        best_theta, best_J = theta, None
        history = []
        k = 0
        for k in range(1, self.max_iter + 1):
            margins = T * (Z @ theta)
            violated = xp.astype(margins < 1.0, X.dtype)
            # one objective per one-vs-rest classifier; each keeps its own best iterate
            J = xp.mean(xp.maximum(1.0 - margins, 0.0), axis=0) + 0.5 * lam * xp.sum(
                mask * theta ** 2, axis=0)
            if best_J is None:
                best_J, best_theta = J, theta
            else:
                better = J < best_J
                best_J = xp.where(better, J, best_J)
                best_theta = xp.where(better[None, :], theta, best_theta)
            total = float(xp.sum(best_J))
            if total != total:
                raise ValueError(f"{who}: the objective became NaN; scale the features or lower lr")
            history.append(total)
            if len(history) > self.n_iter_no_change:
                old = history[-1 - self.n_iter_no_change]
                if old - total <= self.tol * abs(total):
                    break
            grad = -(Z.mT @ (T * violated)) / n + lam * mask * theta
            theta = theta - (self.lr / (1.0 + self.lr * lam * k)) * grad
        self.coef_ = best_theta[:d, :].mT
        if self.fit_intercept:
            self.intercept_ = best_theta[d, :]
        else:
            self.intercept_ = xp.zeros((T.shape[1],), dtype=X.dtype, device=X.device)
        self.classes_ = classes
        self.n_iter_ = k
        self.n_features_in_ = d
        return self

    def decision_function(self, X):
        """Scores w.x + b: shape (n,) for two classes, (n, K) otherwise."""
        X = check_predict_X(self, X, "LinearSVC.decision_function", "coef_")
        scores = X @ self.coef_.mT + self.intercept_
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict(self, X):
        scores = self.decision_function(X)
        return ovr_predict(self.classes_, scores)
