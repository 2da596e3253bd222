"""Reports: figures (matplotlib, Agg backend) and a self-contained HTML page.

:func:`write_report` turns :class:`decaylab.demo.DemoResults` into ``report.html``,
``results.json`` and ``figures/*.png`` inside one output directory.
"""

from __future__ import annotations

from decaylab.report.html import ReportFiles, write_report

__all__ = ["ReportFiles", "write_report"]
