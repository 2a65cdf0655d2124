"""Accuracy of every xpnet.classic model next to its scikit-learn counterpart, as a Markdown table.

    python scripts/classic_vs_sklearn.py [--backend numpy|array_api_strict|cupy] [--device D]

Each data set (scikit-learn's bundled iris, wine, breast_cancer; diabetes for regression) is split
75/25 by scikit-learn's train_test_split(random_state=0, stratified for classes) and standardised
on the training part; the scores are on the test part (accuracy, R^2 for regression), and the mean
of a 5-fold cross-validation on the training part (the same unshuffled folds for both). Host-side
script: it uses NumPy and scikit-learn directly to prepare data and for the reference models.
"""

from __future__ import annotations

import argparse
import time
import warnings

from sklearn import datasets, discriminant_analysis, ensemble, linear_model, naive_bayes, neighbors, svm
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.preprocessing import StandardScaler

import xpnet
from xpnet import classic


def load(name):
    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    stratify = None if name == "diabetes" else y
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, random_state=0, stratify=stratify)
    scaler = StandardScaler().fit(X_tr)
    return scaler.transform(X_tr), scaler.transform(X_te), y_tr, y_te


def cases():
    """(data set, xpnet model, its label, scikit-learn model, its label)."""
    yield from [
        ("diabetes", classic.LinearRegression(), "LinearRegression()",
         linear_model.LinearRegression(), "LinearRegression()"),
        ("diabetes", classic.LinearRegression(alpha=10.0), "LinearRegression(alpha=10)",
         linear_model.Ridge(alpha=10.0), "Ridge(alpha=10)"),
        ("diabetes", classic.LinearRegression(solver="gd", alpha=10.0), "LinearRegression('gd', alpha=10)",
         linear_model.Ridge(alpha=10.0), "Ridge(alpha=10)"),
    ]
    for loss in ("bce", "mse"):
        for solver in ("newton", "gd"):
            yield ("breast_cancer", classic.LogisticRegression(loss=loss, solver=solver),
                   f"LogisticRegression('{loss}', '{solver}')", linear_model.LogisticRegression(),
                   "LogisticRegression()")
    for name in ("iris", "wine"):
        for solver in ("newton", "gd"):
            yield (name, classic.SoftmaxRegression(solver=solver), f"SoftmaxRegression('{solver}')",
                   linear_model.LogisticRegression(), "LogisticRegression()")
    for name in ("iris", "wine", "breast_cancer"):
        yield (name, classic.Perceptron(), "Perceptron()", linear_model.Perceptron(), "Perceptron()")
    for name in ("iris", "wine", "breast_cancer"):
        yield (name, classic.LinearSVC(), "LinearSVC()", svm.LinearSVC(loss="hinge", max_iter=100000),
               "LinearSVC(loss='hinge')")
    for name in ("iris", "wine", "breast_cancer"):
        for metric in ("euclidean", "manhattan"):
            yield (name, classic.KNeighborsClassifier(metric=metric), f"KNeighborsClassifier('{metric}')",
                   neighbors.KNeighborsClassifier(algorithm="brute", metric=metric),
                   f"KNeighborsClassifier('{metric}')")
    for name in ("iris", "wine", "breast_cancer"):
        # breast_cancer's class covariances are near singular: QDA refuses them unregularised
        reg = 1e-3 if name == "breast_cancer" else 0.0
        yield (name, classic.GaussianClassifier("full", reg=reg), f"GaussianClassifier('full', reg={reg:g})",
               discriminant_analysis.QuadraticDiscriminantAnalysis(reg_param=reg),
               f"QuadraticDiscriminantAnalysis(reg_param={reg:g})")
        yield (name, classic.GaussianClassifier("shared"), "GaussianClassifier('shared')",
               discriminant_analysis.LinearDiscriminantAnalysis(solver="lsqr"),
               "LinearDiscriminantAnalysis('lsqr')")
        yield (name, classic.GaussianClassifier("diagonal"), "GaussianClassifier('diagonal')",
               naive_bayes.GaussianNB(var_smoothing=0.0), "GaussianNB(var_smoothing=0)")
    for name in ("iris", "wine", "breast_cancer"):
        yield (name, classic.BaggingClassifier(classic.KNeighborsClassifier(1), random_state=0),
               "BaggingClassifier(KNN(1))",
               ensemble.BaggingClassifier(neighbors.KNeighborsClassifier(1), random_state=0),
               "BaggingClassifier(KNN(1))")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    backend = xpnet.get_backend(args.backend, args.device)
    print(f"backend {backend}; scores on the 25 % test split (R^2 for diabetes, else accuracy)\n")
    print("| data | xpnet model | xpnet | scikit-learn model | scikit-learn | xpnet 5-fold CV | "
          "scikit-learn 5-fold CV | xpnet fit s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, ours, our_label, theirs, their_label in cases():
        X_tr, X_te, y_tr, y_te = load(name)
        Xb_tr, Xb_te, yb_tr, yb_te = (xpnet.to_device(a, backend) for a in (X_tr, X_te, y_tr, y_te))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            ours.fit(Xb_tr, yb_tr)
            backend.synchronize()
            seconds = time.perf_counter() - start
            theirs.fit(X_tr, y_tr)
            # cross-validation on the training part: unshuffled (Stratified)KFold, the same folds
            ours_cv = float(xpnet.to_numpy(classic.cross_val_score(ours, Xb_tr, yb_tr, cv=5)).mean())
            theirs_cv = cross_val_score(theirs, X_tr, y_tr, cv=5).mean()
        print(f"| {name} | {our_label} | {ours.score(Xb_te, yb_te):.4f} | {their_label} | "
              f"{theirs.score(X_te, y_te):.4f} | {ours_cv:.4f} | {theirs_cv:.4f} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
