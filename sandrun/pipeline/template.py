"""Templates and conditions in a pipeline: Jinja2 expressions, in its sandboxed environment.

`{{ … }}` in a step's values and its `when:` are expressions over `steps`, `params`,
`item` and `index`. The sandbox refuses attribute access to anything private or unsafe
(`__class__`, a function's globals), so a pipeline file can read values but not reach
the server. A value that is one `{{ … }}` takes the expression's value (a list, a
digest, a number); text around it makes a string.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from jinja2 import StrictUndefined, Undefined, nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_TEXT = 64 << 10  # characters a rendered string may hold


class _Env(ImmutableSandboxedEnvironment):
    """The sandbox, with `**` and `*` bounded: `7 ** 9999999` or `'x' * 10**12` would hold a
    server's thread or memory."""

    intercepted_binops = frozenset({"**", "*"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            if abs(left) > 1 and left.bit_length() * abs(right) > 4096:
                raise SecurityError(f"{left!r} ** {right!r} is too large to compute here")
        if operator == "*" and isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > 1 << 16:
                raise SecurityError("a product that large is not computed here")
        if operator == "*" and any(isinstance(v, str | list | tuple) for v in (left, right)):
            times = right if isinstance(right, int) else left
            if isinstance(times, int) and times * len(left if times is right else right) > MAX_TEXT:
                raise SecurityError(f"a repeat {times} times is over {MAX_TEXT} items")
        return super().call_binop(context, operator, left, right)


_ENV = _Env(undefined=StrictUndefined, autoescape=False)
_ENV.globals = {"range": _ENV.globals["range"]}  # no lipsum, cycler, joiner, namespace
# `| tojson` writes what it cannot as text (a value only a run gives, at submit's check).
_ENV.policies["json.dumps_kwargs"] = {"sort_keys": True, "default": str}
_ONE_EXPRESSION = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.DOTALL)


class TemplateProblem(Exception):
    """A template that cannot be read or evaluated; the message says why."""


def expression_of(value: str) -> str | None:
    """The expression of a value that is exactly one `{{ … }}`, else None."""
    match = _ONE_EXPRESSION.match(value)
    if match is None or "{{" in match.group(1) or "}}" in match.group(1):
        return None
    return match.group(1).strip()


@contextmanager
def _problems(text: str) -> Iterator[None]:
    """Whatever evaluating `text` raises, as one TemplateProblem that quotes it."""
    try:
        yield
    except TemplateProblem as exc:
        raise TemplateProblem(f"{text!r}: {exc}") from None
    except SecurityError as exc:
        raise TemplateProblem(f"{text!r} is not allowed: {exc}") from None
    except TemplateError as exc:
        raise TemplateProblem(f"{text!r}: {exc}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as exc:
        raise TemplateProblem(f"{text!r}: {type(exc).__name__}: {exc}") from None


def evaluate(expression: str, context: Mapping[str, Any]) -> Any:
    """The value of `expression` (no braces) in `context`."""
    with _problems(expression):
        value = _ENV.compile_expression(expression, undefined_to_none=False)(**context)
        if isinstance(value, Undefined):
            value._fail_with_undefined_error()
        return value


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """`value` with every template in it (dict values and keys, list items) evaluated."""
    if isinstance(value, str):
        return _render_text(value, context)
    if isinstance(value, list):
        return [render(v, context) for v in value]
    if isinstance(value, dict):
        return {render(k, context): render(v, context) for k, v in value.items()}
    return value


def _render_text(text: str, context: Mapping[str, Any]) -> Any:
    if "{{" not in text and "{%" not in text:
        return text
    one = expression_of(text)
    if one is not None:
        return evaluate(one, context)
    with _problems(text):
        out = _ENV.from_string(text).render(**context)
    if len(out) > MAX_TEXT:
        raise TemplateProblem(f"{text!r} renders to {len(out)} characters, over {MAX_TEXT}")
    return out


def step_refs(value: Any) -> set[str]:
    """The step names `value`'s templates read (`steps.NAME` or `steps['NAME']`)."""
    return {name for text in _texts(value) for name in _refs_in(text)}


def _texts(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _texts(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _texts(k)
            yield from _texts(v)


def _refs_in(text: str) -> set[str]:
    if "{{" not in text and "{%" not in text:
        return set()
    try:
        tree = _ENV.parse(text)
    except TemplateError as exc:
        raise TemplateProblem(f"{text!r}: {exc}") from None
    found = set()
    for node in tree.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name) and node.node.name == "steps":
            found.add(node.attr)
    for item in tree.find_all(nodes.Getitem):
        named = isinstance(item.node, nodes.Name) and item.node.name == "steps"
        if named and isinstance(item.arg, nodes.Const) and isinstance(item.arg.value, str):
            found.add(item.arg.value)
    return found


def condition_refs(expression: str) -> set[str]:
    """The step names a `when:` expression reads."""
    return _refs_in("{{ " + expression + " }}")
