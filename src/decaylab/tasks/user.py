"""Look a task up by name: built-in, ``path/to/file.py:function`` or ``package.module:function``."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from pathlib import Path

from decaylab.tasks.base import Task
from decaylab.tasks.builtin import TASKS, available_tasks

__all__ = ["get_task", "load_user_task"]


def get_task(spec: str) -> Task:
    """A built-in task by name, or a user's task from ``FILE.py:fn`` / ``pkg.mod:fn``.

    Raises
    ------
    ValueError
        Unknown name; a file that does not exist or does not import (the message names the
        file and shows its own error); a missing function; a function that does not return
        a :class:`Task`.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"task must be a non-empty string, got {spec!r}")
    if spec in TASKS:
        return TASKS[spec]()
    if ":" not in spec:
        raise ValueError(
            f"task must be one of {', '.join(available_tasks())}, or FILE.py:FUNCTION, or "
            f"package.module:FUNCTION; got {spec!r}"
        )
    return load_user_task(spec)


def _import_file(path: Path) -> object:
    if not path.is_file():
        raise ValueError(f"task file {str(path)!r} does not exist")
    mod_name = f"decaylab_user_task_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"task file {str(path)!r} cannot be imported (not a Python file?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[mod_name]
        raise ValueError(f"task file {str(path)!r} failed to import:\n{_short_tb(exc)}") from exc
    return module


def _short_tb(exc: BaseException) -> str:
    """The user's own traceback, without decaylab's frames."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if "importlib" not in f.filename and "decaylab/tasks" not in f.filename.replace("\\", "/")
    ]
    lines = traceback.format_list(frames) + traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip()


def load_user_task(spec: str) -> Task:
    """Call the function named by ``FILE.py:fn`` or ``pkg.mod:fn`` and check its result."""
    where, _, fn_name = spec.rpartition(":")
    if not where or not fn_name.isidentifier():
        raise ValueError(f"task {spec!r}: expected FILE.py:FUNCTION or package.module:FUNCTION")
    if where.endswith(".py") or "/" in where or "\\" in where:
        module = _import_file(Path(where))
        origin = f"task file {where!r}"
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:
            raise ValueError(f"task module {where!r} failed to import:\n{_short_tb(exc)}") from exc
        origin = f"task module {where!r}"
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ValueError(f"{origin} has no function {fn_name!r}")
    try:
        task = fn()
    except ValueError as exc:
        raise ValueError(f"{origin}: {fn_name}() raised: {exc}") from exc
    except Exception as exc:
        raise ValueError(f"{origin}: {fn_name}() failed:\n{_short_tb(exc)}") from exc
    if not isinstance(task, Task):
        raise ValueError(
            f"{origin}: {fn_name}() must return a decaylab.tasks.Task, got {type(task).__name__}"
        )
    return task
