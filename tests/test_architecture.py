"""The shape ARCHITECTURE.md promises: imports one way, tasks that resolve, small modules."""
from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from jobs_api import queue

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("jobs_api", "workers")
MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 60
MAX_PARAMETERS = 7
FLASK = ("flask", "flask_smorest", "werkzeug", "webargs")


def test_the_import_contracts_hold() -> None:
    """pyproject.toml's [tool.importlinter] contracts, checked by import-linter."""
    checked = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=ROOT,
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout[-3000:]


def test_the_worker_tasks_load_no_flask() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, workers.tasks, workers.sweeper, workers.worker; "
                               "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in sys.argv[1:])))",
         *FLASK], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.split() == []


@pytest.mark.parametrize("task", [queue.PROCESS_JOB, queue.DELIVER_CALLBACK, queue.CONVERT_ARRIVING, queue.SWEEP])
def test_every_task_the_api_queues_is_a_worker_function(task: str) -> None:
    module, _, name = task.rpartition(".")
    assert callable(getattr(importlib.import_module(module), name))


def _modules() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def test_no_module_is_long() -> None:
    long = {str(path.relative_to(ROOT)): count for path in _modules()
            if (count := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def _explained(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A comment right above the function (or its decorators) says why it is long."""
    first = min([node.lineno, *(decorator.lineno for decorator in node.decorator_list)])
    return first >= 2 and lines[first - 2].strip().startswith("#")


def test_no_function_is_long_or_takes_many_parameters_unexplained() -> None:
    found = []
    for path in _modules():
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            arguments = node.args
            count = len(arguments.posonlyargs) + len(arguments.args) + len(arguments.kwonlyargs)
            count -= bool(arguments.args and arguments.args[0].arg in ("self", "cls"))
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if (length > MAX_FUNCTION_LINES or count > MAX_PARAMETERS) and not _explained(lines, node):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines, {count} parameters)")
    assert found == []
