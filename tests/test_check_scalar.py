"""_checks.check_scalar refuses flags given where a number goes, in every container."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from decaylab._checks import check_scalar


@pytest.mark.parametrize("flag", [True, np.True_, np.bool_(False), torch.tensor(True)], ids=repr)
def test_bools_are_refused_however_wrapped(flag) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="k must be a real number"):
        check_scalar(flag, "k", low=0, integer=True)


@pytest.mark.parametrize(
    "number", [2, 2.0, np.int64(2), np.float64(2.0), np.array(2.0), torch.tensor(2.0)], ids=repr
)
def test_numbers_still_pass_however_wrapped(number) -> None:  # noqa: ANN001
    assert check_scalar(number, "k", low=1, integer=True) == 2
