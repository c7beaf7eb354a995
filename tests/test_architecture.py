"""The map's rules, checked: students train only through the engine; modules and functions stay small; no library
function touches the global random state."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import torch
import torch.optim.optimizer as optim_hooks

import labkit
from labkit import data, dlf

LABKIT = Path(labkit.__file__).parent
METHOD_MODULES = ("l2t", "dlf", "dlf_model", "dln", "lot", "reweight", "arena")


def test_every_module_is_under_450_lines_and_every_function_under_60():
    long_functions, long_modules = [], []
    for path in sorted(LABKIT.rglob("*.py")):
        lines = path.read_text().splitlines()
        if len(lines) > 450:
            long_modules.append(f"{path.relative_to(LABKIT)}: {len(lines)} lines")
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long_functions.append(f"{path.relative_to(LABKIT)}:{node.lineno} {node.name}")
    assert not long_modules, long_modules
    assert not long_functions, long_functions


class StepWatch:
    """Records, for every optimizer step anywhere, the labkit file whose code called it and the parameters it
    moves (torch.optim's global pre-hook)."""

    def __init__(self):
        self.calls: list[tuple[str, set[int]]] = []

    def __enter__(self):
        self.handle = optim_hooks.register_optimizer_step_pre_hook(self.hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()

    def hook(self, optimizer, args, kwargs):
        caller = next((Path(f.filename).name for f in inspect.stack()[1:]
                       if Path(f.filename).parent == LABKIT), "outside labkit")
        params = {id(p) for group in optimizer.param_groups for p in group["params"]}
        self.calls.append((caller, params))

    def outside_engine(self, teacher_params: set[int]) -> list[str]:
        """Steps not taken by the engine that move anything but the teacher's parameters."""
        return [caller for caller, params in self.calls if caller != "engine.py" and not params <= teacher_params]


def _tiny(seed: int = 0) -> data.Splits:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(600) % 10
    x = 0.5 * torch.randn(600, 1, 28, 28, generator=g)
    for c in range(10):
        x[y == c, :, 2 * c:2 * c + 2, :] += 1.0
    return data.from_tensors(x[:500], y[:500], dev_size=100, test=(x[500:], y[500:]), seed=seed)


def test_dlf_students_train_only_through_the_engine():
    splits = _tiny()
    cfg = dlf.PRESETS["smoke"]
    with StepWatch() as watch:
        teacher, _ = dlf.train_teacher(splits, cfg, 0, progress_bar=False)
        dlf.compare(teacher, splits, cfg, [0, 1], progress_bar=False)
    assert any(caller == "engine.py" for caller, _ in watch.calls)
    assert watch.outside_engine({id(p) for p in teacher.parameters()}) == []


def test_the_watch_catches_a_student_stepped_outside_the_engine():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    with StepWatch() as watch:
        opt.step()
    assert watch.outside_engine(set()) == ["outside labkit"]


@pytest.mark.parametrize("module", ["dlf"])
def test_method_modules_do_not_seed_globally(module):
    source = (LABKIT / f"{module}.py").read_text()
    assert "manual_seed(" not in source.replace("generator().manual_seed", "") or "torch.manual_seed" not in source
    assert "seed_everything" not in source and "np.random.seed" not in source
