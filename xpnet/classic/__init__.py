"""Classic models of the course as scikit-learn-style estimators on any Array-API backend.

Arrays go in and come out in the namespace and on the device of the input (NumPy, CuPy,
array_api_strict, torch); defaults follow scikit-learn's estimator of the same name.
"""

from .base import BaseEstimator, ConvergenceWarning, NotFittedError, clone
from .ensemble import BaggingClassifier
from .gaussian import GaussianClassifier
from .knn import KNeighborsClassifier
from .linear import LinearRegression
from .logistic import LogisticRegression
from .model_selection import KFold, StratifiedKFold, cross_val_score, train_test_split
from .perceptron import Perceptron
from .softmax import SoftmaxRegression
from .svm import LinearSVC

__all__ = [
    "BaseEstimator", "ConvergenceWarning", "NotFittedError", "clone",
    "LinearRegression", "LogisticRegression", "SoftmaxRegression", "Perceptron", "LinearSVC",
    "KNeighborsClassifier", "GaussianClassifier", "BaggingClassifier",
    "train_test_split", "KFold", "StratifiedKFold", "cross_val_score",
]
