"""The study's phases; each is a function of the task, the config and upstream results.

Order: :mod:`reference` → :mod:`curvature` → :mod:`l2` → :mod:`l1` →
:mod:`early_stopping` → :mod:`picture`. Each returns a dict of tensors and plain values
(cached by :class:`decaylab.study.cache.PhaseCache`); the grid points of L2 and L1
(``l2_point``, ``l1_point``) are pure module-level functions an executor can run anywhere.
"""
