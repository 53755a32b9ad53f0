"""Doubles that fail when our code uses an API the real library lacks.

Methods of ``tensorrt_rtx``'s pybind11 classes have no Python signature, but their docstrings list every
overload (``set_input_shape(self: ..., name: str, shape: tuple) -> bool``). :func:`spec_double` builds a
``unittest.mock`` autospec of the real class (``spec_set``: an attribute the class lacks cannot be read
or written), and routes every method call through :func:`check_call`, which binds the arguments to one
of the documented overloads (names, count and coarse types) before the double's own implementation
runs. Plain Python functions (cuda-python, torch.cuda) are checked by ``mock.create_autospec`` itself.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any
from unittest import mock


class NotModelled(AssertionError):
    """The code under test called a real API member that the double does not implement."""


def _split_params(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current.strip())
    return parts


def _matching_paren(text: str, start: int) -> int:
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced signature: {text[start : start + 80]}")


def overloads(func: Any, name: str) -> list[tuple[inspect.Signature, dict[str, str]]]:
    """Signatures (and parameter type names) of a pybind11 method, parsed from its docstring."""
    doc = getattr(func, "__doc__", None) or ""
    found = []
    for match in re.finditer(rf"(?m)^(?:\d+\. )?{re.escape(name)}\(", doc):
        open_at = match.end() - 1
        params_text = doc[open_at + 1 : _matching_paren(doc, open_at)]
        if "*args" in params_text:
            continue  # pybind11's "Overloaded function." header; the numbered overloads follow
        params, types = [], {}
        for raw in _split_params(params_text):
            pname, _, rest = raw.partition(":")
            type_name, _, default = rest.partition("=")
            pname = pname.strip()
            types[pname] = type_name.strip()
            params.append(
                inspect.Parameter(
                    pname,
                    inspect.Parameter.POSITIONAL_OR_KEYWORD,
                    default=None if default.strip() else inspect.Parameter.empty,
                )
            )
        found.append((inspect.Signature(params), types))
    return found


def _type_ok(value: Any, type_name: str) -> bool:
    short = type_name.rsplit(".", 1)[-1]
    if short in ("SupportsInt", "int"):
        return isinstance(value, int) or hasattr(value, "__index__")
    if short == "str":
        return isinstance(value, str)
    if short == "bool":
        return isinstance(value, bool)
    if short == "tuple":
        return isinstance(value, tuple)
    if short in ("list",) or type_name.startswith("list["):
        return isinstance(value, list)
    if short == "Buffer":
        try:
            memoryview(value)
        except TypeError:
            return False
        return True
    if short in ("SupportsFloat", "float"):
        return isinstance(value, (int, float))
    return True  # TensorRT classes and enums: the mocks carry the real class, checked by the double itself


def check_call(real_cls: type, name: str, args: tuple, kwargs: Mapping[str, Any]) -> None:
    """Raise ``TypeError`` unless ``real_cls.name(*args, **kwargs)`` matches one documented overload."""
    sigs = overloads(getattr(real_cls, name), name)
    if not sigs:
        return  # undocumented: the autospec still checked the name
    problems = []
    for sig, types in sigs:
        try:
            bound = sig.bind(None, *args, **kwargs)
        except TypeError as exc:
            problems.append(str(exc))
            continue
        wrong = [p for p, v in bound.arguments.items() if p != "self" and not _type_ok(v, types.get(p, ""))]
        if not wrong:
            return
        problems.append(f"wrong type for {wrong}")
    raise TypeError(f"{real_cls.__name__}.{name}{args!r} matches no overload of the real API: {problems}")


def spec_double(real_cls: type, impl: Any, **attributes: Any) -> Any:
    """An autospec of ``real_cls`` whose methods are checked by :func:`check_call`, then run on ``impl``.

    Args:
        real_cls: The real class (e.g. ``tensorrt_rtx.IExecutionContext``).
        impl: Object with a method per modelled API method; a real method it lacks raises :class:`NotModelled`.
        attributes: Initial values of properties (``num_io_tensors=3``).
    """
    double = mock.create_autospec(real_cls, instance=True, spec_set=True)
    for name in dir(real_cls):
        if name.startswith("_"):
            continue
        member = inspect.getattr_static(real_cls, name)
        if isinstance(member, property):
            continue
        if not callable(getattr(real_cls, name)):
            continue
        getattr(double, name).side_effect = _checked(real_cls, name, getattr(impl, name, None))
    for name, value in attributes.items():
        setattr(double, name, value)
    return double


def _checked(real_cls: type, name: str, fn: Callable[..., Any] | None) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        check_call(real_cls, name, args, kwargs)
        if fn is None:
            raise NotModelled(f"the test double does not model {real_cls.__name__}.{name}; extend sam3_trt.testing")
        return fn(*args, **kwargs)

    return call


def function_double(real_fn: Callable[..., Any], impl: Callable[..., Any] | None, name: str) -> Any:
    """An autospec of a plain Python function (argument names and count checked by ``mock``) running ``impl``."""
    if impl is None:

        def impl(*_args: Any, **_kwargs: Any) -> Any:
            raise NotModelled(f"the test double does not model {name}; extend sam3_trt.testing")

    return mock.create_autospec(real_fn, side_effect=impl)
