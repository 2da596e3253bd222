"""Tasks: a model factory, a mean loss and train/validation data, ready for the study.

A :class:`Task` is what ``decaylab run`` studies. Built-in tasks are looked up by name,
a user's own task by ``path/to/file.py:function`` or ``package.module:function`` (the
function takes no arguments and returns a :class:`Task`):

>>> from decaylab.tasks import available_tasks, get_task
>>> available_tasks()
['breast-cancer-logistic', 'diabetes', 'digits-mlp', 'mnist1d-cnn']
>>> task = get_task("diabetes")
>>> task.n_params, task.n_train, task.n_val
(10, 353, 89)
"""

from decaylab.tasks.base import Task, loss_name, seeded_model
from decaylab.tasks.builtin import TASKS, available_tasks
from decaylab.tasks.user import get_task, load_user_task

__all__ = [
    "TASKS",
    "Task",
    "available_tasks",
    "get_task",
    "load_user_task",
    "loss_name",
    "seeded_model",
]
