"""``python -m decaylab``: the same command line as the ``decaylab`` console script."""

from __future__ import annotations

from decaylab.cli import main

if __name__ == "__main__":
    main()
