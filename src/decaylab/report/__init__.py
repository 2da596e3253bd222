"""The study's report: figures (matplotlib, Agg backend) and a self-contained HTML page.

:func:`render` turns a study's ``results.json`` (as a dict, schema version 1, see
``docs/study.md``) into ``report.html`` and ``figures/*.png``; it reads nothing else and never
imports the study, so ``decaylab report DIR`` re-renders any saved study.
:func:`load_results` reads ``results.json`` with a clear error when it is unusable.
"""

from __future__ import annotations

from decaylab.report.page import load_results, render

__all__ = ["load_results", "render"]
