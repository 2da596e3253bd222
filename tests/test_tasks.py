"""Tasks: built-ins match their data sources; user tasks load; bad tasks fail clearly."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from decaylab.tasks import Task, available_tasks, get_task


def _tiny(**changes):
    torch.manual_seed(0)
    kw = dict(
        name="tiny",
        model=lambda: nn.Linear(3, 1).double(),
        loss_fn=nn.MSELoss(),
        train=(torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)),
        val=(torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64)),
    )
    kw.update(changes)
    return Task(**kw)


def test_builtin_names():
    assert available_tasks() == ["breast-cancer-logistic", "diabetes", "digits-mlp", "mnist1d-cnn"]


def test_digits_mlp_sizes_split_and_standardization():
    from sklearn.datasets import load_digits

    task = get_task("digits-mlp")
    raw = load_digits()
    assert task.n_train + task.n_val == len(raw.target) and task.n_val == 540
    assert 2000 <= task.n_params <= 5000
    # stratified: every class's share in train and val within 1 percentage point
    for split in (task.train, task.val):
        share = np.bincount(split[1].numpy(), minlength=10) / len(split[1])
        np.testing.assert_allclose(share, np.bincount(raw.target) / len(raw.target), atol=0.01)
    X = task.train[0].numpy()
    used = X.std(axis=0) > 0
    np.testing.assert_allclose(X[:, used].mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(X[:, used].std(axis=0), 1, atol=1e-12)
    model = task.validate(0)
    assert model(task.val[0][:5]).shape == (5, 10)


def test_diabetes_is_linear_from_zero():
    task = get_task("diabetes")
    model = task.validate(0)
    assert task.n_params == 10 and not any(p.abs().sum() for p in model.parameters())
    assert task.train[1].shape == (task.n_train, 1)


def test_breast_cancer_is_logistic():
    task = get_task("breast-cancer-logistic")
    assert task.n_params == 31 and type(task.loss_fn).__name__ == "BCEWithLogitsLoss"


def test_seeded_initialization_is_reproducible():
    task = get_task("digits-mlp")
    a, b, other = task.validate(3), task.validate(3), task.validate(4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a[0].weight, other[0].weight)  # the seed is what decides
    assert task.fingerprint(3) == task.fingerprint(3) != task.fingerprint(4)


def test_user_task_from_file(tmp_path):
    path = tmp_path / "mytask.py"
    path.write_text(
        textwrap.dedent("""
        import torch
        from torch import nn
        from decaylab.tasks import Task

        def make_task():
            g = torch.Generator().manual_seed(1)
            X = torch.randn(30, 4, generator=g, dtype=torch.float64)
            y = (X[:, :1] > 0).double()
            return Task(name="mine", model=lambda: nn.Linear(4, 1).double(),
                        loss_fn=nn.BCEWithLogitsLoss(), train=(X[:20], y[:20]),
                        val=(X[20:], y[20:]))
    """)
    )
    task = get_task(f"{path}:make_task")
    assert task.name == "mine" and task.n_params == 5 and task.n_val == 10


@pytest.mark.parametrize(
    "body, fn, match",
    [
        ("import nonexistent_pkg_xyz\n", "f", r"mytask\.py.*failed to import.*nonexistent_pkg_xyz"),
        ("def g():\n    return 1\n", "f", r"mytask\.py.*has no function 'f'"),
        (
            "def f():\n    return 1\n",
            "f",
            r"mytask\.py.*must return a decaylab.tasks.Task, got int",
        ),
        ("def f():\n    raise RuntimeError('boom')\n", "f", r"mytask\.py.*f\(\) failed.*boom"),
    ],
)
def test_user_task_errors_name_the_file(tmp_path, body, fn, match):
    path = tmp_path / "mytask.py"
    path.write_text(body)
    with pytest.raises(ValueError, match="(?s)" + match):
        get_task(f"{path}:{fn}")


def test_missing_file_and_unknown_name():
    with pytest.raises(ValueError, match="does not exist"):
        get_task("/no/such/file.py:f")
    with pytest.raises(ValueError, match="must be one of .*digits-mlp"):
        get_task("nope")


def test_sum_loss_refused():
    with pytest.raises(ValueError, match="reduction=.sum.*mean"):
        _tiny(loss_fn=nn.MSELoss(reduction="sum"))

    def summed(pred, y):
        return ((pred - y) ** 2).sum()

    with pytest.raises(ValueError, match="returns a sum"):
        _tiny(loss_fn=summed).validate()


def test_dropout_in_training_mode_refused():
    task = _tiny(model=lambda: nn.Sequential(nn.Linear(3, 1), nn.Dropout(0.5)).double())
    with pytest.raises(ValueError, match="'1' \\(Dropout\\) is in training mode"):
        task.validate()


def test_bad_data_refused():
    X = torch.randn(8, 3, dtype=torch.float64)
    X[2, 1] = float("nan")
    with pytest.raises(ValueError, match="train.*NaN"):
        _tiny(train=(X, torch.randn(8, 1)))
    with pytest.raises(ValueError, match="share"):
        _tiny(train=(torch.randn(8, 3), torch.randn(7, 1)))
    with pytest.raises(ValueError, match="would be broadcast"):
        _tiny(
            train=(torch.randn(8, 3, dtype=torch.float64), torch.randn(8, dtype=torch.float64))
        ).validate()
    with pytest.raises(ValueError, match="zero-argument callable"):
        _tiny(model=nn.Linear(3, 1))
