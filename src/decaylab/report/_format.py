"""Number formatting shared by the study report's captions, tables and figure labels."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["fmt", "num", "plural", "seconds"]

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def fmt(value: Any, digits: int = 3) -> str:
    """A number as a reader expects it: 3 significant digits, powers of ten outside [1e-3, 1e4).

    Missing and non-finite values are spelled out, never hidden.

    >>> fmt(0.000123), fmt(12.3456), fmt(2.5e-6), fmt(None), fmt(float("nan")), fmt(3)
    ('1.23×10⁻⁴', '12.3', '2.5×10⁻⁶', '—', 'NaN', '3')
    >>> fmt(1040.2), fmt(-0.5), fmt(123456.0)
    ('1,040', '−0.5', '1.23×10⁵')
    """
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    x = float(value)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if x == 0:
        return "0"
    if 10**digits <= abs(x) < 1e4:
        text = f"{round(x):,}"
        return text.replace("-", "−")
    if 1e-3 <= abs(x) < 1e4:
        text = f"{x:.{digits}g}"
        return text.replace("-", "−") if x < 0 else text
    mantissa, exponent = f"{x:.{max(digits - 1, 0)}e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa
    sign = "−" if mantissa.startswith("-") else ""
    return f"{sign}{mantissa.lstrip('-')}×10{str(int(exponent)).translate(_SUPERSCRIPT)}"


def num(value: Any) -> str:
    """Jinja filter: like :func:`fmt` with 4 significant digits (tables)."""
    return fmt(value, 4)


def plural(count: int, word: str, many: str | None = None) -> str:
    """``"1 direction"``, ``"3 directions"``.

    >>> plural(1, "direction"), plural(2, "direction"), plural(0, "is", "are")
    ('1 direction', '2 directions', '0 are')
    """
    return f"{count:,} {word if count == 1 else (many or word + 's')}"


def seconds(value: Any) -> str:
    """Durations: ``"0.42 s"``, ``"12.3 s"``, ``"2 min 05 s"``.

    >>> seconds(0.4213), seconds(12.34), seconds(125.0), seconds(None)
    ('0.42 s', '12.3 s', '2 min 05 s', '—')
    """
    if value is None:
        return "—"
    x = float(value)
    if not math.isfinite(x):
        return fmt(x)
    if x < 10:
        return f"{x:.2f} s"
    if x < 60:
        return f"{x:.1f} s"
    minutes, rest = divmod(round(x), 60)
    return f"{minutes} min {rest:02d} s"
