"""The value types a metric can have, and the check each value must pass.

An action prints text; before it is published the text is stripped and checked
against the metric's declared type, so that a reader parsing a ``uint32`` never
meets ``-1`` or ``abc``.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Callable, Union

INTEGER_RANGES: dict[str, tuple[int, int]] = {
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
REAL_LIMITS: dict[str, float] = {
    "real32": 3.4028234663852886e38,
    "real64": sys.float_info.max,
}
VALUE_TYPES: tuple[str, ...] = (*INTEGER_RANGES, *REAL_LIMITS, "string")
#: Types a <metric> of the configuration may have: the value types, plus
#: ``group`` (several comma-separated values) and ``xml`` (ready elements).
CONFIG_TYPES: tuple[str, ...] = ("xml", "group", *VALUE_TYPES)
CONTEXTS: tuple[str, ...] = ("host", "vm")

# An integer may carry a fractional part of zeros only: the C vhostmd's own
# scripts print integers with printf %f ("28.000000"), which it publishes.
_INTEGER = re.compile(r"([+-]?[0-9]+)(?:\.0*)?\Z")
# float() also takes "nan", "inf" and "1_000"; readers of the C daemon use
# strtod/strtoll, so only plain decimal notation is published.
_REAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\Z")
# Characters XML 1.0 cannot carry at all, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class BadValue(ValueError):
    """A value that does not fit its metric type; the message says why."""


def normalize(type_: str, text: str) -> str:
    """Return *text* as it is published for a metric of *type_*.

    Surrounding whitespace is stripped. Integers are rewritten in plain
    decimal (``+07`` becomes ``7``, ``28.000000`` becomes ``28``: a
    fractional part is accepted when it is all zeros); reals keep their text. Raises
    :class:`ValueError` with a reason when the text does not fit the type.
    """
    value = text.strip()
    if type_ in INTEGER_RANGES:
        match = _INTEGER.match(value)
        if not match:
            raise BadValue(f"{value!r} is not an integer")
        number = int(match.group(1))
        low, high = INTEGER_RANGES[type_]
        if not low <= number <= high:
            raise BadValue(f"{number} is out of range for {type_}")
        return str(number)
    if type_ in REAL_LIMITS:
        if not _REAL.match(value):
            raise BadValue(f"{value!r} is not a decimal number")
        if abs(float(value)) > REAL_LIMITS[type_]:
            raise BadValue(f"{value} is out of range for {type_}")
        return value
    if type_ == "string":
        bad = _NOT_XML.search(value)
        if bad:
            raise BadValue(f"control character {bad.group()!r} cannot be published in XML")
        return value
    raise BadValue(f"unknown metric type {type_!r}")


def format_real(number: float) -> str:
    """Format a real the way the C daemon's actions print it (``%f``)."""
    return f"{number:f}"


#: A value as computed in the daemon (by a built-in), before it is formatted for its type.
Value = Union[int, float, str]


def format_value(type_: str, value: Value) -> str:
    """*value* as published for a metric of *type_*; raises BadValue when it does not fit."""
    if type_ in INTEGER_RANGES:
        if not isinstance(value, int):
            raise BadValue(f"{value!r} is not an integer")
        low, high = INTEGER_RANGES[type_]
        if not low <= value <= high:
            raise BadValue(f"{value} is out of range for {type_}")
        return str(value)
    if type_ in REAL_LIMITS:
        if isinstance(value, int):
            return str(value)
        if not math.isfinite(value) or abs(value) > REAL_LIMITS[type_]:
            raise BadValue(f"{value} is out of range for {type_}")
        return format_real(value)
    if isinstance(value, float):
        return format_real(value)
    return normalize("string", str(value))


def formatter(type_: str) -> Callable[[Value], str]:
    """A fast format_value for one type: the common case inline, the rest delegated."""
    if type_ in INTEGER_RANGES:
        low, high = INTEGER_RANGES[type_]

        def integer(value: Value) -> str:
            if value.__class__ is int and low <= value <= high:
                return str(value)
            return format_value(type_, value)

        return integer
    if type_ in REAL_LIMITS:
        limit = REAL_LIMITS[type_]

        def real(value: Value) -> str:
            if value.__class__ is float and -limit <= value <= limit:
                return f"{value:f}"
            return format_value(type_, value)

        return real
    return lambda value: format_value(type_, value)
