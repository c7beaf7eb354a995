"""Pair-flip 30 %: does a DLF teacher learn the noise pattern, and at which teacher lr (judged on held-out dev)?"""
import time
from dataclasses import replace
import numpy as np, torch
from labkit import data, dlf, plots, seeds
torch.set_num_threads(1)
splits = data.load("mnist", dev_size=5000, seed=0, root="/work/shared/data")
noisy = data.noisy_labels(splits, 0.3, kind="pairflip", seed=0)
held = replace(noisy, dev=noisy.dev[2500:])
base = replace(dlf.PRESETS["cpu"], dev_read=2500)
tune = seeds.deployment_seeds(0, 5)
T = np.asarray(noisy.scenario[-1]["transition"])
def dev_of(teacher, cfg, lr=None):
    student = cfg.student if lr is None else replace(cfg.student, lr=lr)
    tr = dlf._train(held, cfg, tune, teacher, student, record=False, role=seeds.TUNE, progress_bar=False)
    return float(np.mean([t.metrics["dev_acc"] for t in tr]))
print(dict(ce=dev_of(None, base, base.ce_lr)), flush=True)
print(dict(phi0=dev_of(dlf.untrained_teacher(noisy, base).at_start(), base)), flush=True)
for opt, lr in (("sgd", 0.01), ("sgd", 0.1), ("sgd", 1.0), ("adam", 0.003)):
    cfg = replace(base, teacher_optimizer=opt, teacher_lr=lr)
    t0 = time.time()
    teacher, tr = dlf.train_teacher(noisy, cfg, 0, progress_bar=False)
    change = teacher.bank.detach().mean(0).numpy() - teacher.phi0()
    row = dict(opt=opt, lr=lr, align=plots.noise_alignment(change, T), max_shift=float(np.abs(change).max()),
               dev=dev_of(teacher, cfg), secs=time.time() - t0)
    print(row, flush=True)
