"""labkit: a teaching lab for learning to teach (L2T, L2T-DLF, L2T-DLN, LoT).

    import labkit
    splits = labkit.data.load("mnist", dev_size=5000, seed=0, device="cpu")
    trace = labkit.fit("mlp", splits, steps=2000, batch_size=128, lr=0.1, schedule="cosine", seed=0)
    print(trace.metrics["test_acc"])

Everything loads on first use (`labkit.dlf`, `labkit.fit`, ...), so `import labkit` itself is light, and the
runner's own process (`labkit reproduce`, `labkit report`) never imports torch: only the notebooks' kernels do.
"""
import importlib

__version__ = "0.2.0"
SUBMODULES = ("arena", "cards", "checkpoint", "checks", "cli", "cluster", "course", "data", "dispatch", "dlf",
              "dlf_model", "dln", "dln_model", "engine", "exercises", "l2t", "l2t_policies", "lot", "meta", "models",
              "papers", "plots", "population", "report", "repro", "reweight", "scenarios", "seeds", "stats", "student",
              "trace", "widgets")
NAMES = {"Split": "data", "Splits": "data", "resolve_device": "data", "Hooks": "engine", "Run": "engine",
         "fit": "engine", "train": "engine", "StudentConfig": "student", "evaluate": "student", "Trace": "trace"}


def __getattr__(name: str):
    if name in SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in NAMES:
        return getattr(importlib.import_module(f".{NAMES[name]}", __name__), name)
    raise AttributeError(f"module 'labkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *SUBMODULES, *NAMES])
