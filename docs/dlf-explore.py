"""Explore teacher lr / gate for a visibly moving Φ_t, judged on dev (held-out half), cpu preset MLP."""
import json, sys, time
from dataclasses import replace
import numpy as np, torch
from labkit import data, dlf, seeds
torch.set_num_threads(1)
splits = data.load("mnist", dev_size=5000, seed=0, root="/work/shared/data")
held = replace(splits, dev=splits.dev[2500:])          # selection reads this half only
base = replace(dlf.PRESETS["cpu"], dev_read=2500)      # the teacher's surrogate reads the first half
tune = seeds.deployment_seeds(0, 5)
out = []
def deploy_dev(teacher, cfg):
    traces = dlf._train(held, cfg, tune, teacher, cfg.student, record=False, role=seeds.TUNE, progress_bar=False)
    return float(np.mean([t.metrics["dev_acc"] for t in traces]))
for gate, opt, lr in [(g, o, l) for g in ("progress", "static") for o, l in
                      (("sgd", 0.01), ("sgd", 0.1), ("sgd", 1.0), ("adam", 0.001), ("adam", 0.003))] + [("progress", "sgd", 3.0)]:
    cfg = replace(base, gate=gate, teacher_optimizer=opt, teacher_lr=lr)
    t0 = time.time()
    teacher, tr = dlf.train_teacher(splits, cfg, 0, progress_bar=False)
    bank = teacher.bank.detach()
    shift = float((bank - teacher.start_bank).abs().max())
    spread = float((bank.max(0).values - bank.min(0).values).abs().max())
    acc = deploy_dev(teacher, cfg)
    row = dict(gate=gate, opt=opt, lr=lr, max_shift=shift, bank_spread=spread, dev_acc_heldout=acc,
               teacher_s=time.time() - t0, last_dev_acc=tr.metrics["final_dev_acc"])
    print(row, flush=True); out.append(row)
phi0 = dlf.untrained_teacher(splits, base).at_start()
print(dict(phi0_dev=deploy_dev(phi0, base)), flush=True)
ce = dlf._train(held, base, tune, None, replace(base.student, lr=base.ce_lr), record=False, role=seeds.TUNE, progress_bar=False)
print(dict(ce_dev=float(np.mean([t.metrics["dev_acc"] for t in ce]))), flush=True)
