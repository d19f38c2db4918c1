"""Every ``default=`` a public docstring states is the default the code uses."""

import ast
import importlib
import inspect
import pkgutil
import re

import pytest
from sklearn.base import BaseEstimator

import skgnn

STATED_DEFAULT = re.compile(r"^\s*(\w+) : [^\n]*?default=(.+?)\.?\s*$", re.MULTILINE)


def _public_callables():
    for info in pkgutil.iter_modules(skgnn.__path__):
        module = importlib.import_module(f"skgnn.{info.name}")
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isclass(obj) or inspect.isfunction(obj):
                yield module, obj


def _stated_value(text: str, module):
    """The value a docstring names: a literal, or a dotted name such as ``torch.nn.L1Loss``."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        head, *rest = text.split(".")
        value = vars(module).get(head) or vars(skgnn).get(head) or importlib.import_module(head)
        for part in rest:
            value = getattr(value, part)
        return value


def _actual_defaults(obj) -> dict:
    """Signature defaults, and get_params for estimators whose keywords pass on (skorch)."""
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(obj).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    if inspect.isclass(obj) and issubclass(obj, BaseEstimator):
        try:
            defaults = {**obj().get_params(deep=False), **defaults}
        except TypeError:  # a required parameter (a meta-estimator's estimator)
            pass
    return defaults


STATEMENTS = [
    pytest.param(module, obj, name, text, id=f"{obj.__qualname__}.{name}")
    for module, obj in _public_callables()
    for name, text in STATED_DEFAULT.findall(inspect.getdoc(obj) or "")
]


def test_the_docstrings_state_defaults_of_every_kind():
    """The scan must find what it checks: the networks' widths, the estimators' pass-ons."""
    ids = {statement.id for statement in STATEMENTS}
    assert len(STATEMENTS) > 80
    assert {"MessageNet.edge_width", "MessageLayer.edge_layers", "CGCNNRegressor.lr",
            "CGCNNRegressor.criterion", "CrystalGraphTransformer.cutoff"} <= ids  # fmt: skip


@pytest.mark.parametrize(("module", "obj", "name", "text"), STATEMENTS)
def test_stated_default_is_the_default(module, obj, name, text):
    actual = _actual_defaults(obj)
    assert name in actual, f"{obj.__qualname__} documents {name!r}, which it does not take"
    stated = _stated_value(text, module)
    default = actual[name]
    # the same value and kind ("8" may state a float 8.0; True may not state 1)
    same = stated == default and (type(stated) is type(default) or isinstance(default, float))
    assert same, f"{obj.__qualname__}: the docstring says {name}={text}, the code {default!r}"
