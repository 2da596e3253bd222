"""Reports: figures (matplotlib, Agg backend) and a self-contained HTML page.

:func:`render` turns a study's ``results.json`` (as a dict, schema version 1, see
``docs/study.md``) into ``report.html`` and ``figures/*.png``; it reads nothing else and never
imports the study, so ``decaylab report DIR`` re-renders any saved study.

:func:`write_report` is the older report of the linear ``demo``
(:class:`decaylab.demo.DemoResults`), kept until the study produces the linear case too.
"""

from __future__ import annotations

from typing import Any

from decaylab.report.page import load_results, render

__all__ = ["ReportFiles", "load_results", "render", "write_report"]


def __getattr__(name: str) -> Any:
    # The demo's report imports decaylab.demo (and torch); load it only when asked for.
    if name in ("ReportFiles", "write_report"):
        from decaylab.report import html

        return getattr(html, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
