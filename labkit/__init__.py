"""labkit: a teaching lab for learning to teach (L2T, L2T-DLF, L2T-DLN, LoT).

    import labkit
    splits = labkit.data.load("mnist", dev_size=5000, seed=0, device="cpu")
    model = labkit.models.build("mlp", in_shape=splits.in_shape, num_classes=splits.num_classes)
    trace = labkit.fit(model, splits, steps=2000, batch_size=128, lr=0.1, momentum=0.9, seed=0)
    print(labkit.evaluate(model, splits.test))
"""
from . import data, dlf, dln, l2t, lot, meta, models, papers, plots, trace, train
from .data import Split, Splits, resolve_device
from .trace import Trace
from .train import evaluate, fit, seed_everything

__version__ = "0.1.0"
__all__ = ["data", "dlf", "dln", "l2t", "lot", "meta", "models", "papers", "plots", "trace", "train", "Trace", "Split", "Splits", "fit", "evaluate", "seed_everything",
           "resolve_device"]
