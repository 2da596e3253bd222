"""CurvatureMonitor: logs certified curvature through the trainer's logger, changes nothing.

References are independent: ``numpy.linalg.eigh`` of ``torch.func.hessian`` of the loss on the
monitored data, explicit sums over those eigenvalues, and a second training run without the
callback (weights compared bit for bit).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian

pl = pytest.importorskip("lightning.pytorch")
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec")
from lightning.pytorch.loggers import Logger  # noqa: E402

from decaylab import ConvergenceWarning, TheoryWarning  # noqa: E402
from decaylab.integrations.lightning import CurvatureMonitor  # noqa: E402

LR, WD, EPOCHS, BATCH = 0.05, 0.01, 3, 8


class ListLogger(Logger):
    """Keeps every ``log_metrics`` call in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[int | None, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "list"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:  # noqa: ANN001
        pass

    def log_metrics(self, metrics, step=None) -> None:  # noqa: ANN001
        self.records.append((step, dict(metrics)))

    def curvature(self) -> list[tuple[int | None, dict[str, float]]]:
        return [(s, m) for s, m in self.records if any(k.startswith("curvature/") for k in m)]


class Tiny(pl.LightningModule):
    """21 parameters; dropout and a shuffled loader make training consume the torch RNG."""

    def __init__(self, optimizer: str = "sgd", mixed_decay: bool = False) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Dropout(0.2), nn.Linear(4, 1))
        self.loss_fn = "half_mse"
        self.optimizer, self.mixed_decay = optimizer, mixed_decay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):  # noqa: ANN001
        x, y = batch
        return 0.5 * (self(x) - y).pow(2).sum(dim=1).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.mixed_decay:
            groups = [
                {"params": self.net[0].parameters(), "weight_decay": WD},
                {"params": self.net[3].parameters(), "weight_decay": 0.0},
            ]
            return torch.optim.SGD(groups, lr=LR)
        if self.optimizer == "adamw":
            return torch.optim.AdamW(self.parameters(), lr=LR, weight_decay=WD)
        return torch.optim.SGD(self.parameters(), lr=LR, weight_decay=WD)


class EatsRandomness(pl.Callback):
    """A careless callback: draws from the global torch generator (the test must notice)."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        torch.rand(1)


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    X = torch.randn(32, 3, generator=g)
    y = torch.sin(X.sum(1, keepdim=True)) + 0.1 * torch.randn(32, 1, generator=g)
    return X, y


def train(data, callbacks=(), max_epochs=EPOCHS, **module_kwargs):  # noqa: ANN001, ANN201
    pl.seed_everything(0, verbose=False)
    model = Tiny(**module_kwargs)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(*data), batch_size=BATCH, shuffle=True
    )
    logger = ListLogger()
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=list(callbacks),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        log_every_n_steps=1,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers).*")
        trainer.fit(model, loader)
    return model, logger


def _flat_loss_and_outputs(model: Tiny, data):  # noqa: ANN001, ANN202
    """w0 (float64, eval mode), the mean ½-squared error of w, and the outputs of w."""
    X, y = (t.double() for t in data)
    net = Tiny().double().eval()
    net.load_state_dict(model.state_dict())
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    w0 = torch.cat([p.detach().reshape(-1) for _, p in net.named_parameters()])

    def outputs(w: torch.Tensor) -> torch.Tensor:
        parts, start = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            parts[name] = w[start : start + shape.numel()].view(shape)
            start += shape.numel()
        return functional_call(net, parts, (X,))

    def loss(w: torch.Tensor) -> torch.Tensor:
        return 0.5 * (outputs(w) - y).pow(2).sum(1).mean()

    return w0, loss, outputs


def reference_eigenvalues(model: Tiny, data, ggn: bool = False) -> np.ndarray:  # noqa: ANN001
    """Descending eigenvalues of torch.func.hessian of the loss (or of Jᵀ J / N, the GGN)."""
    w0, loss, outputs = _flat_loss_and_outputs(model, data)
    if ggn:
        jac = torch.func.jacrev(outputs)(w0).reshape(-1, w0.numel())
        matrix = jac.T @ jac / len(data[0])
    else:
        matrix = hessian(loss)(w0)
    return np.linalg.eigh(matrix.numpy())[0][::-1]


def test_training_unchanged_and_eigenvalues_match_eigh(data) -> None:
    plain, _ = train(data)
    monitor = CurvatureMonitor(data, every_n_epochs=1, k=3, dtype=torch.float64)
    monitored, logger = train(data, [monitor])
    for (name, a), b in zip(
        plain.state_dict().items(), monitored.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), f"{name} changed by the monitor"
    careless, _ = train(data, [EatsRandomness()])
    assert not all(
        torch.equal(a, b)
        for a, b in zip(plain.state_dict().values(), careless.state_dict().values(), strict=True)
    ), "the comparison cannot see a callback that touches the RNG"
    assert monitored.training and monitored.net[2].training  # mode restored after fit's end

    logged = logger.curvature()
    assert len(logged) == EPOCHS
    step, metrics = logged[-1]
    assert step == EPOCHS * (32 // BATCH)
    lam = reference_eigenvalues(monitored, data)
    got = np.array([metrics[f"curvature/eig_{i}"] for i in (1, 2, 3)])
    np.testing.assert_allclose(got, lam[:3], rtol=1e-6, atol=1e-9)
    assert metrics["curvature/n_certified"] == 3
    assert metrics["curvature/seconds"] > 0 and metrics["curvature/n_matvecs"] > 0
    assert (
        abs(metrics["curvature/trace"] - lam.sum())
        <= 4 * metrics["curvature/trace_std_error"] + 1e-9
    )

    gamma_top = sum(v / (v + WD) for v in lam[:3])
    assert metrics["curvature/alpha"] == WD and metrics["curvature/weight_decay_decoupled"] == 0
    assert metrics["curvature/gamma"] == pytest.approx(gamma_top, rel=1e-6)
    assert "curvature/gamma_upper" not in metrics  # lam has values below -WD: no bound holds
    assert metrics["curvature/early_stopping_alpha"] == pytest.approx(1 / (LR * step), rel=1e-12)
    assert metrics["curvature/lr_times_lambda_max"] == pytest.approx(LR * lam[0], rel=1e-6)


def test_every_n_epochs_and_ggn_gamma_bound(data) -> None:
    monitor = CurvatureMonitor(data, every_n_epochs=2, k=2, curvature="ggn", dtype=torch.float64)
    model, logger = train(data, [monitor], max_epochs=2)
    logged = logger.curvature()
    assert [s for s, _ in logged] == [2 * (32 // BATCH)]  # end of epoch 2 only
    metrics = logged[0][1]
    lam = reference_eigenvalues(model, data, ggn=True)
    np.testing.assert_allclose(
        [metrics["curvature/eig_1"], metrics["curvature/eig_2"]], lam[:2], rtol=1e-6
    )
    gamma_full = sum(v / (v + WD) for v in lam)
    assert metrics["curvature/gamma"] <= gamma_full <= metrics["curvature/gamma_upper"]
    silent = CurvatureMonitor(data, every_n_epochs=5, trace_matvecs=0)
    _, logger = train(data, [silent], max_epochs=2)
    assert logger.curvature() == [] and silent.history == []


def test_uncertified_eigenvalues_are_not_logged(data) -> None:
    monitor = CurvatureMonitor(data, k=4, max_matvecs=4, trace_matvecs=0, tol=1e-12)
    with pytest.warns(ConvergenceWarning):
        _, logger = train(data, [monitor])
    _, metrics = logger.curvature()[-1]
    record = monitor.history[-1]
    n_ok = int(sum(record["certified"]))
    assert n_ok < 4 and metrics["curvature/n_certified"] == n_ok
    assert {k for k in metrics if k.startswith("curvature/eig_")} == {
        f"curvature/eig_{i + 1}" for i in range(n_ok)
    }


def test_adamw_decay_flagged_and_mixed_decay_has_no_gamma(data) -> None:
    with pytest.warns(TheoryWarning, match="decoupled"):
        _, logger = train(data, [CurvatureMonitor(data, k=2)], optimizer="adamw")
    assert logger.curvature()[-1][1]["curvature/weight_decay_decoupled"] == 1
    with pytest.warns(TheoryWarning, match="different weight decays"):
        _, logger = train(data, [CurvatureMonitor(data, k=2)], mixed_decay=True)
    assert "curvature/gamma" not in logger.curvature()[-1][1]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"k": 0}, "k"),
        ({"every_n_epochs": 1.5}, "every_n_epochs"),
        ({"curvature": "fisher"}, "curvature"),
        ({"trace_matvecs": 2}, "trace_matvecs"),
        ({"alpha": -1.0}, "alpha"),
    ],
)
def test_bad_arguments(data, kwargs, field) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=field):
        CurvatureMonitor(data, **kwargs)


def test_bad_data() -> None:
    with pytest.raises(ValueError, match="data"):
        CurvatureMonitor((torch.zeros(3, 2), torch.zeros(4)))
    with pytest.raises(ValueError, match="data"):
        CurvatureMonitor(iter([(torch.zeros(3, 2), torch.zeros(3))]))
    with pytest.raises(ValueError, match="NaN"):
        CurvatureMonitor((torch.full((3, 2), float("nan")), torch.zeros(3)))


def test_readme_example_runs_as_written(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Inside Lightning", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|many workers|logging interval)")
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    last = namespace["monitor"].history[-1]
    assert len(last["eigenvalues"]) == 5 and all(last["certified"])
    metrics = (tmp_path / "lightning_logs/lightning_logs/version_0/metrics.csv").read_text()
    assert "curvature/eig_1" in metrics and "curvature/gamma" in metrics
