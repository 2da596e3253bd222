"""Integrations of decaylab with training frameworks.

:mod:`decaylab.integrations.lightning` holds :class:`CurvatureMonitor`, a Lightning
callback (install the extra: ``pip install 'decaylab[lightning]'``). It is not imported
here, so ``import decaylab.integrations`` works without Lightning installed.
"""
