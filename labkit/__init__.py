"""labkit: a teaching lab for learning to teach (L2T, L2T-DLF, L2T-DLN, LoT).

    import labkit
    splits = labkit.data.load("mnist", dev_size=5000, seed=0, device="cpu")
    trace = labkit.fit("mlp", splits, steps=2000, batch_size=128, lr=0.1, schedule="cosine", seed=0)
    print(trace.metrics["test_acc"])

Submodules load on first use (`labkit.dlf`, `labkit.plots`, ...), so `import labkit` stays light.
"""
import importlib

from . import checks, data, engine, models, population, seeds, stats, student, trace
from .data import Split, Splits, resolve_device
from .engine import Hooks, Run, fit, train
from .student import StudentConfig, evaluate
from .trace import Trace

__version__ = "0.2.0"
SUBMODULES = ("arena", "cli", "dlf", "dlf_model", "dln", "l2t", "lot", "meta", "papers", "plots", "report", "repro",
              "reweight", "scenarios", "widgets")


def __getattr__(name: str):
    if name in SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'labkit' has no attribute {name!r}")
