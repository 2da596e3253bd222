"""Benchmark workloads: trained models and data, at a point where the Hessian means something.

Three workloads, each built deterministically from a seed and trained briefly (a few epochs of
Adam) so that the curvature is measured near a trained point rather than at initialization:

- ``digits_mlp``: 64 -> 64 -> 10 ReLU MLP on scikit-learn's digits (1,797 samples),
  4,810 parameters; small enough for the exact dense Hessian.
- ``mnist1d_cnn``: 1-D CNN on MNIST-1D (5,000 samples of length 40, generated offline by
  ``mnist1d.data.make_dataset``; never downloaded). Three 'same'-padded convolutions
  1 -> 8 -> 16 -> 32 channels of width 5, then 1,280 -> 64 -> 10: exactly 85,930 parameters.
- ``cifar_resnet18``: the CIFAR-style ResNet-18 (3x3 stem, no max-pool, basic blocks
  [2, 2, 2, 2] of widths 64-512, 11,173,962 parameters) on random CIFAR-shaped inputs with
  random labels (2,048 by default). Defined here; no torchvision.

Every workload is returned in eval mode with a mean cross-entropy loss, so all tools see the
same objective ``J(w) = (1/N) sum_n CE(f(x_n; w), y_n)`` on one full batch.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass
class Workload:
    """A trained model with its full-batch data and mean loss."""

    name: str
    model: nn.Module
    loss_fn: nn.Module
    X: torch.Tensor
    y: torch.Tensor
    description: str
    train_accuracy: float
    notes: list[str] = field(default_factory=list)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])


def _train(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> float:
    """A few epochs of Adam on shuffled mini-batches; returns the final training accuracy."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    n = X.shape[0]
    # Deterministic cuDNN kernels, so every run measures the same trained network.
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(X.device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(X[idx]), y[idx]).backward()
            optimizer.step()
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved
    model.eval()
    # Curvature tools must not accumulate into .grad of the benchmark model.
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        correct = 0
        for start in range(0, n, 512):
            correct += (model(X[start : start + 512]).argmax(1) == y[start : start + 512]).sum()
    return float(correct) / n


def _trained_workload(
    name: str,
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    description: str,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    notes: tuple[str, ...] = (),
) -> Workload:
    """Train ``model`` briefly (:func:`_train`) and wrap it as a mean cross-entropy workload."""
    acc = _train(model, X, y, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    return Workload(
        name=name,
        model=model,
        loss_fn=nn.CrossEntropyLoss(),
        X=X,
        y=y,
        description=f"{description}, trained {epochs} epochs of Adam",
        train_accuracy=acc,
        notes=list(notes),
    )


def digits_mlp(device: str | torch.device = "cpu", seed: int = 0, epochs: int = 10) -> Workload:
    """64 -> 64 -> 10 ReLU MLP on scikit-learn digits (4,810 parameters)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = torch.tensor(digits.data / 16.0, dtype=torch.float32, device=device)
    y = torch.tensor(digits.target, dtype=torch.long, device=device)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).to(device)
    description = f"MLP 64-64-10 (ReLU) on scikit-learn digits, {X.shape[0]} samples"
    return _trained_workload(
        "digits_mlp", model, X, y, description, epochs=epochs, batch_size=64, lr=1e-2, seed=seed
    )


class MNIST1DConvNet(nn.Module):
    """Three 'same' convolutions 1->8->16->32 (width 5), then 1,280 -> 64 -> 10: 85,930 params."""

    def __init__(self, length: int = 40, n_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, 8, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(8, 16, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(16, 32, 5, padding=2),
            nn.ReLU(),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * length, 64), nn.ReLU(), nn.Linear(64, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.unsqueeze(1)))


def mnist1d_data(n_samples: int = 5000, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-1D generated offline: ``make_dataset`` with all samples in the 'train' split."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = n_samples
    args.train_split = 1.0
    args.seed = seed
    data = make_dataset(args)
    return data["x"].astype(np.float32), data["y"].astype(np.int64)


def mnist1d_cnn(
    device: str | torch.device = "cpu", seed: int = 0, n_samples: int = 5000, epochs: int = 10
) -> Workload:
    """1-D CNN (85,930 parameters) on 5,000 MNIST-1D samples."""
    x_np, y_np = mnist1d_data(n_samples)
    X = torch.from_numpy(x_np).to(device)
    y = torch.from_numpy(y_np).to(device)
    torch.manual_seed(seed)
    model = MNIST1DConvNet(length=X.shape[1]).to(device)
    description = (
        "1-D CNN (conv 8-16-32, width 5; dense 1280-64-10) on MNIST-1D "
        f"(mnist1d.make_dataset, offline), {n_samples} samples"
    )
    return _trained_workload(
        "mnist1d_cnn", model, X, y, description, epochs=epochs, batch_size=100, lr=2e-3, seed=seed
    )


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs: 3x3 stem without max-pool, as usual for CIFAR-10."""

    def __init__(self, n_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers = []
        in_planes = width
        for planes, stride in ((width, 1), (2 * width, 2), (4 * width, 2), (8 * width, 2)):
            blocks = [BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)]
            in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.linear = nn.Linear(8 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1)
        return self.linear(out)


def cifar_resnet18(
    device: str | torch.device = "cpu",
    seed: int = 0,
    n_samples: int = 2048,
    epochs: int = 2,
    width: int = 64,
    image_size: int = 32,
) -> Workload:
    """CIFAR-style ResNet-18 (11.2 M parameters) on random CIFAR-shaped inputs, eval mode.

    ``width`` (64 for ResNet-18) and ``image_size`` shrink it into a CPU-sized stand-in that
    runs the same code: width 16 on 16x16 inputs has 701,466 parameters.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    X = torch.randn(n_samples, 3, image_size, image_size, generator=generator).to(device)
    y = torch.randint(0, 10, (n_samples,), generator=generator).to(device)
    torch.manual_seed(seed)
    model = CifarResNet18(width=width).to(device)
    description = (
        f"CIFAR-style ResNet-18{'' if width == 64 else f' at width {width}'} (BatchNorm in "
        f"eval mode) on {n_samples} random 3x{image_size}x{image_size} inputs with random labels"
    )
    return _trained_workload(
        "cifar_resnet18",
        model,
        X,
        y,
        description,
        epochs=epochs,
        batch_size=128,
        lr=1e-3,
        seed=seed,
        notes=("random data: the spectrum is that of a net fitting noise, fine for timing",),
    )


class EvalAffineBatchNorm(nn.Module):
    """A BatchNorm layer in eval mode written as the per-channel affine map it is.

    ``γ (x − μ) / sqrt(σ² + eps) + β`` with the running statistics, from elementary ops,
    under the same parameter and buffer names, so ``functional_call`` and the Hessian see
    the same function. PyTorch's BatchNorm double backward is known to be slow on CUDA
    (pytorch/pytorch#3076); this lets the GPU run measure whether that is what makes the
    cached double-backward product cost 4.6 gradients there.
    """

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = bn.weight, bn.bias, bn.eps
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(shape) + shift.view(shape)


def with_affine_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of an eval-mode ``model`` whose BatchNorm layers are :class:`EvalAffineBatchNorm`."""
    if model.training:
        raise ValueError("with_affine_batchnorm: the model must be in eval mode")
    twin = copy.deepcopy(model)
    for parent in list(twin.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(parent, name, EvalAffineBatchNorm(child))
    return twin.eval()


#: What a user can set for convolution speed without touching the math: cuDNN autotuning
#: (``torch.backends.cudnn.benchmark``) and NHWC tensors (``torch.channels_last``).
KERNEL_SETTINGS = ("default", "cudnn_benchmark", "channels_last", "both")


@contextlib.contextmanager
def kernel_setting(name: str, wl: Workload) -> Iterator[Workload]:
    """Apply a setting to cuDNN and to (a view of) the workload; undo it afterwards.

    The memory format only concerns 4-D tensors (images); other workloads are left as they are.
    """
    if name not in KERNEL_SETTINGS:
        raise ValueError(f"kernel setting must be one of {KERNEL_SETTINGS}, got {name!r}")
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = name in ("cudnn_benchmark", "both")
    fmt = torch.channels_last if name in ("channels_last", "both") else torch.contiguous_format
    wl.model.to(memory_format=fmt)
    X = wl.X.contiguous(memory_format=fmt) if wl.X.ndim == 4 else wl.X
    try:
        yield replace(wl, X=X, notes=[*wl.notes, f"kernel setting: {name}"])
    finally:
        torch.backends.cudnn.benchmark = saved
        wl.model.to(memory_format=torch.contiguous_format)


WORKLOADS = {
    "digits_mlp": digits_mlp,
    "mnist1d_cnn": mnist1d_cnn,
    "cifar_resnet18": cifar_resnet18,
}


def make_workload(
    name: str,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
    resnet_samples: int = 2048,
    resnet_width: int = 64,
    resnet_image_size: int = 32,
) -> Workload:
    """The workload ``name`` of :data:`WORKLOADS`; the ``resnet_*`` sizes go to the ResNet."""
    if name not in WORKLOADS:
        raise ValueError(f"workload must be one of {sorted(WORKLOADS)}, got {name!r}")
    if name == "cifar_resnet18":
        return cifar_resnet18(
            device,
            seed,
            n_samples=resnet_samples,
            width=resnet_width,
            image_size=resnet_image_size,
        )
    return WORKLOADS[name](device, seed)


def workload_from_args(name: str, args: Any, device: str | torch.device) -> Workload:
    """:func:`make_workload` from a benchmark's parsed ``--seed`` and ``--resnet-*`` options."""
    return make_workload(
        name,
        device=device,
        seed=args.seed,
        resnet_samples=args.resnet_samples,
        resnet_width=args.resnet_width,
        resnet_image_size=args.resnet_image_size,
    )
