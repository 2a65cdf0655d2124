"""Gaussian class-conditional classifiers: QDA, LDA and Gaussian naive Bayes in one estimator."""

from __future__ import annotations

import math

from array_api_compat import array_namespace

from .base import (
    BaseEstimator,
    ClassifierMixin,
    check_choice,
    check_positive,
    check_predict_X,
    check_X,
    check_y_classes,
    logsumexp,
    one_hot,
    to_python_list,
)


class GaussianClassifier(ClassifierMixin, BaseEstimator):
    """Bayes' rule with a Gaussian density per class: p(k | x) ∝ pi_k N(x; mu_k, Sigma_k).

    Maximum-likelihood fit on the n_k samples of class k (dividing by n_k, not n_k - 1):
        mu_k = (1/n_k) sum_{i in k} x_i
        'full'      Sigma_k = (1/n_k) sum_{i in k} (x_i - mu_k)(x_i - mu_k)^T        (QDA)
        'shared'    Sigma   = (1/n) sum_k sum_{i in k} (x_i - mu_k)(x_i - mu_k)^T    (LDA)
        'diagonal'  Sigma_k = diag of the 'full' one: independent features          (Gaussian NB)
    then ``reg`` is added to every variance: Sigma <- Sigma + reg I. Priors pi_k are the class
    frequencies n_k / n unless ``priors`` (K numbers summing to 1) is given.

    The log-density uses the Cholesky factor Sigma = L L^T: with z solving L z = x - mu,
        log N(x; mu, Sigma) = -(1/2) (||z||^2 + D log(2 pi)) - sum_j log L_jj,
    and posteriors come from log pi_k + log N normalised with logsumexp (``predict_log_proba``),
    so that far-away points neither overflow nor divide 0 by 0.

    Fitted: ``means_`` (K, D); ``covariances_`` (K, D, D) for 'full', (D, D) for 'shared', (K, D)
    variances for 'diagonal' (scikit-learn's GaussianMixture convention); ``priors_`` (K,);
    ``classes_``; ``class_count_``.

    Matching scikit-learn (posteriors agree to 1e-6, see tests/classic/test_gaussian.py):
      'shared'   = LinearDiscriminantAnalysis(solver='lsqr' or 'eigen') with default priors (its
                   covariance is sum_k pi_k Sigma_k with the ML Sigma_k; the 'svd' solver uses
                   n - K instead).
      'diagonal' = GaussianNB(var_smoothing=reg / max_j var(X[:, j])) (it adds var_smoothing times
                   the largest feature variance of all of X, divided by n).
      'full'     = QuadraticDiscriminantAnalysis(reg_param=0, priors=n_k/n) fitted on X plus one
                   extra sample at each class mean: QDA divides by n_k - 1, and the extra point
                   leaves the mean and the scatter unchanged while making n_k - 1 the original n_k.
                   (QDA's reg_param blends (1 - r) Sigma + r I rather than adding reg I.)
    """

    def __init__(self, covariance="full", reg=0.0, priors=None):
        self.covariance = covariance
        self.reg = reg
        self.priors = priors

    def fit(self, X, y):
        who = "GaussianClassifier.fit"
        check_choice(who, "covariance", self.covariance, ("full", "shared", "diagonal"))
        check_positive(who, "reg", self.reg, allow_zero=True)
        X = check_X(X, who)
        classes, codes = check_y_classes(y, X, who)
        xp = array_namespace(X)
        n, d = X.shape
        k = classes.shape[0]
        member = one_hot(codes, k, X.dtype)  # (n, K)
        counts = xp.sum(member, axis=0)
        means = (member.mT @ X) / counts[:, None]  # (K, D)
        centred = X - xp.take(means, codes, axis=0)  # each sample minus its own class mean
        eye = xp.eye(d, dtype=X.dtype, device=X.device)
        if self.covariance == "diagonal":
            cov = (member.mT @ (centred * centred)) / counts[:, None] + self.reg
            if not bool(xp.all(cov > _singular_floor(xp, cov))):
                raise ValueError(self._singular_message(who, "a feature is constant within a class"))
            self._log_det = xp.sum(xp.log(cov), axis=1)
        elif self.covariance == "shared":
            cov = centred.mT @ centred / n + self.reg * eye
            self._chol = self._cholesky(xp, cov, who)
        else:
            # scatter of class j: sum_i member_ij c_i c_i^T, all classes in one batched product
            weighted = member.mT[:, :, None] * centred[None, :, :]  # (K, n, D)
            cov = weighted.mT @ centred / counts[:, None, None] + self.reg * eye
            self._chol = self._cholesky(xp, cov, who)
        if self.covariance != "diagonal":
            diag = xp.linalg.diagonal(self._chol)
            self._log_det = 2.0 * xp.sum(xp.log(diag), axis=-1)
        self.priors_ = self._priors(xp, counts, n, k, X, who)
        self.means_ = means
        self.covariances_ = cov
        self.classes_ = classes
        self.class_count_ = counts
        self.n_features_in_ = d
        return self

    def _priors(self, xp, counts, n, k, X, who):
        if self.priors is None:
            return counts / n
        priors = self.priors
        values = to_python_list(priors) if hasattr(priors, "shape") else [float(p) for p in priors]
        if len(values) != k or any(p < 0 for p in values) or abs(sum(values) - 1.0) > 1e-6:
            raise ValueError(f"{who}: priors must be {k} non-negative numbers summing to 1, got "
                             f"{values}")
        return xp.asarray(values, dtype=X.dtype, device=X.device)

    @staticmethod
    def _singular_message(who, why):
        return f"{who}: a class covariance is singular ({why}); set reg > 0"

    def _cholesky(self, xp, cov, who):
        try:
            chol = xp.linalg.cholesky(cov)
        except Exception as exc:  # numpy/strict raise LinAlgError; cupy returns NaN instead
            raise ValueError(self._singular_message(
                who, "fewer samples than features in a class, or collinear features")) from exc
        # a singular matrix may still factor with a pivot at rounding level. Pivot j squared is the
        # variance of feature j left after regressing it on features < j; compared with its own
        # variance it is scale-free, and a ratio at rounding level means a collinear feature
        pivots = xp.linalg.diagonal(chol) ** 2
        variances = xp.linalg.diagonal(cov)
        floor = cov.shape[-1] * xp.finfo(cov.dtype).eps * variances
        if not bool(xp.all(xp.isfinite(chol))) or not bool(xp.all(pivots > floor)):
            raise ValueError(self._singular_message(
                who, "fewer samples than features in a class, or collinear features"))
        return chol

    def _log_likelihood(self, X):
        """log pi_k + log N(x; mu_k, Sigma_k) for every sample and class, shape (n, K)."""
        xp = array_namespace(X)
        d = X.shape[1]
        diff = X[None, :, :] - self.means_[:, None, :]  # (K, n, D)
        if self.covariance == "diagonal":
            mahalanobis = xp.sum(diff * diff / self.covariances_[:, None, :], axis=2)  # (K, n)
        else:
            chol = self._chol
            if chol.ndim == 2:
                chol = xp.broadcast_to(chol[None, :, :], (diff.shape[0], d, d))
            z = xp.linalg.solve(chol, diff.mT)  # (K, D, n): L z = x - mu
            mahalanobis = xp.sum(z * z, axis=1)
        log_det = xp.reshape(self._log_det, (-1, 1))  # (K, 1), or (1, 1) when shared
        log_density = -0.5 * (mahalanobis + d * math.log(2.0 * math.pi) + log_det)
        return (log_density + xp.log(self.priors_)[:, None]).mT

    def predict_log_proba(self, X):
        X = check_predict_X(self, X, "GaussianClassifier.predict_log_proba", "means_")
        joint = self._log_likelihood(X)
        return joint - logsumexp(joint, axis=1, keepdims=True)

    def predict_proba(self, X):
        """(n, K) posteriors p(k | x), columns in ``classes_`` order."""
        log_proba = self.predict_log_proba(X)
        return array_namespace(log_proba).exp(log_proba)

    def predict(self, X):
        X = check_predict_X(self, X, "GaussianClassifier.predict", "means_")
        xp = array_namespace(X)
        return xp.take(self.classes_, xp.argmax(self._log_likelihood(X), axis=1), axis=0)


def _singular_floor(xp, variances):
    """Variances or pivots at or below D * eps * (largest variance) are rounding noise: (K, 1)."""
    d = variances.shape[-1]
    return d * xp.finfo(variances.dtype).eps * xp.max(variances, axis=-1, keepdims=True)
