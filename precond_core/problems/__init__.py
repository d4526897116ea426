"""Objectives over a flat vector ``x`` (see ``base.Problem`` for the oracle contract).

Factories: ``logistic_regression``, ``scalable``, ``nonlinear_least_squares``, ``softmax_regression``,
``one_d``, ``quadratic``, ``from_function``; by name: ``make_problem``, ``list_problems``, ``problem_info``; user problems:
``register_problem`` or a ``"package.module:function"`` factory path (see ``registry``).
"""
from .base import Problem, check_partition, check_vector, norm, partition
from .module import ModuleProblem, module_problem  # noqa: F401
from .logistic import LogisticRegression, ScalableLogistic, logistic_regression, scalable
from .nls import LINKS, NonlinearLeastSquares, nonlinear_least_squares
from .registry import (dataset_label, import_factory, is_dataset_path, list_problems, make_problem, problem_info,
                       provenance, register_problem, unregister_problem)
from .simple import FunctionProblem, OneD, Quadratic, from_function, one_d, quadratic
from .softmax import SoftmaxRegression, softmax_regression

__all__ = [
    "Problem", "check_vector", "partition", "check_partition", "norm",
    "logistic_regression", "scalable", "nonlinear_least_squares", "softmax_regression", "one_d", "quadratic",
    "from_function", "make_problem", "list_problems", "problem_info", "register_problem", "unregister_problem",
    "import_factory", "provenance", "is_dataset_path", "dataset_label",
    "LogisticRegression", "ScalableLogistic", "NonlinearLeastSquares", "SoftmaxRegression", "OneD",
    "Quadratic", "FunctionProblem", "LINKS",
]
