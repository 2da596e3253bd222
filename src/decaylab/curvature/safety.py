"""Safety checks of the curvature operators: model, batches, loss, backend and products.

Each check raises ``ValueError`` naming what is wrong, so a curvature that cannot be
vouched for is refused rather than returned:

- the model is not in training mode with BatchNorm/Dropout (:func:`check_train_mode`);
- each batch's outputs and targets do not broadcast silently, the loss is a finite
  scalar, the model deterministic, and the loss a mean normalized as
  :func:`decaylab._inputs.batch_weight` says (:func:`check_batch_loss`);
- an explicitly requested ``linearize`` gives pure products for this loss
  (:func:`verify_linearize`);
- vectors going in and products coming out are finite (:func:`check_vector`,
  :func:`check_product`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from decaylab._inputs import check_additive, check_target_shape, probe_mean_loss, scalar_loss

__all__ = [
    "check_train_mode",
    "check_batch_loss",
    "verify_linearize",
    "check_vector",
    "check_product",
    "like_input",
]

#: Repeated products of one linearization compared with double backward by
#: :func:`verify_linearize`, and the samples of the first batch they use.
LINEARIZE_CHECK_PRODUCTS = 3
LINEARIZE_CHECK_SAMPLES = 8


def check_train_mode(model: nn.Module) -> None:
    """Refuse BatchNorm/Dropout in training mode: products would change from call to call."""
    stochastic = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)
    offending = [
        name or type(m).__name__
        for name, m in model.named_modules()
        if isinstance(m, stochastic) and m.training
    ]
    if offending:
        raise ValueError(
            "model is in training mode and contains BatchNorm/Dropout modules "
            f"({', '.join(offending[:4])}{'...' if len(offending) > 4 else ''}): the curvature "
            "would change from product to product; call model.eval() first"
        )


def check_batch_loss(
    forward: Callable[[torch.Tensor], Any],
    loss_fn: Callable,
    X: torch.Tensor,
    y: torch.Tensor,
    index: int,
    *,
    first: bool,
    twice: bool,
) -> None:
    """Check batch ``index`` (of non-zero loss weight) at the fixed weights.

    The model returns a tensor whose shape does not broadcast silently against ``y``;
    the loss is a finite scalar; on the ``first`` batch the loss is a mean (duplicating
    the batch leaves it unchanged) and, with ``twice``, two forward passes agree; on
    every batch the loss's normalizer is the one :func:`~decaylab._inputs.batch_weight`
    knows (cutting the batch in two recombines exactly).
    """
    with torch.no_grad():
        out = forward(X)
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"model must return a tensor, got {type(out).__name__}")
        check_target_shape(out, y, f"data: batch {index}", loss_fn=loss_fn)
        loss = scalar_loss(loss_fn, out, y)
        if not torch.isfinite(loss):
            raise ValueError(f"loss_fn is not finite on data batch {index}: {loss.item()!r}")
        # The probes reuse this loss rather than evaluate it again.
        mean = float(loss.detach().reshape(()))
        if first:
            probe_mean_loss(loss_fn, out, y, mean=mean)
        else:
            check_additive(loss_fn, out, y, mean=mean)
        if twice:
            again = loss_fn(forward(X), y)
            if not torch.allclose(loss, again, rtol=1e-5, atol=0.0):
                raise ValueError(
                    "model is not deterministic: two forward passes of the same batch gave "
                    f"losses {loss.item()!r} and {again.item()!r} (random layers in forward?); "
                    "the curvature would change from product to product"
                )


def verify_linearize(
    make_linearized: Callable[[], Any],
    make_reference: Callable[[], Any],
    v: torch.Tensor,
    rtol: float,
) -> None:
    """Refuse ``backend="linearize"`` when its repeated products are not those of double backward.

    torch's linearization of some losses' gradients is not pure (torch 2.13: repeated
    products of one ``BCEWithLogitsLoss`` linearization drift by 1.4 %, 35 %, 390 %, then
    turn NaN) or not implemented (``HuberLoss``, ``SoftMarginLoss``). For a loss not
    known to be safe, :data:`LINEARIZE_CHECK_PRODUCTS` products of one linearization on a
    few samples must each equal the double-backward product to ``rtol``.
    """
    reference = make_reference().matvec(v)
    try:
        term = make_linearized()
        products = [term.matvec(v) for _ in range(LINEARIZE_CHECK_PRODUCTS)]
    except (RuntimeError, NotImplementedError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"backend='linearize' cannot differentiate this loss_fn ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:160]}); use backend='rev_rev' or 'auto'"
        ) from exc
    scale = float(torch.linalg.vector_norm(reference))
    for count, product in enumerate(products, start=1):
        gap = float(torch.linalg.vector_norm(product - reference))
        if not (gap <= rtol * scale) and bool(torch.isfinite(reference).all()):
            raise ValueError(
                "backend='linearize' is not reliable for this loss_fn: product "
                f"{count} of one linearization differs from double backward by a relative "
                f"{gap / max(scale, 1e-300):.3g} (torch's linearized gradient of this loss is "
                "not pure); use backend='rev_rev' or 'auto'"
            )


# --------------------------------------------------------------------------- vectors


def as_vector_tensor(x: Any, name: str) -> torch.Tensor:
    t = torch.from_numpy(x) if isinstance(x, np.ndarray) else x
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    return t


def check_vector(t: torch.Tensor, name: str) -> None:
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got NaN or inf")


def like_input(out: torch.Tensor, x: Any) -> Any:
    """A product back in the input's kind: numpy (its float dtype, else float64) or torch."""
    if isinstance(x, np.ndarray):
        return out.cpu().numpy().astype(x.dtype if x.dtype.kind == "f" else np.float64)
    return out


def check_product(
    result: torch.Tensor, kind: str, names: Sequence[str], sizes: Sequence[int]
) -> None:
    """Refuse a product with non-finite entries, naming the first parameter they are in."""
    finite = torch.isfinite(result)
    if bool(finite.all()):
        return
    index = int((~finite).any(dim=1).nonzero()[0, 0])
    start, name = 0, "?"
    for candidate, size in zip(names, sizes, strict=True):
        if index < start + size:
            name = candidate
            break
        start += size
    raise ValueError(
        f"the {kind} product has non-finite values at flat index {index}, in "
        f"parameter {name!r}; check the weights and data for overflow"
    )
