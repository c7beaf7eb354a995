"""L2RW against cross-entropy at one learning rate (the arena's student: MLP-100, SGD momentum 0.9, batch 64, 600 steps),
2 deployment seeds, clean MNIST; and how much of each batch's weight lands on each class. A diary script
(docs/arena-diary.md), not part of the lab.

    LABKIT_DATA=../shared/data .venv/bin/python docs/arena-l2rw-lr.py 0.05      # then 0.01
"""
import sys
from dataclasses import replace

import torch

from labkit import data, engine, reweight
from labkit.student import confusion

torch.set_num_threads(1)
lr = float(sys.argv[1])
base = reweight.PRESETS["cpu"]
cfg = replace(base, student=replace(base.student, steps=600, eval_every=200, lr=lr))
splits = data.load("mnist", dev_size=5000, seed=0)
teacher, _ = reweight.train_teacher(splits, cfg, 0)
results = reweight.compare(teacher, splits, cfg, [1000, 1001], progress_bar=False)
for method, traces in results.items():
    print(f"lr {lr}: {method} test acc", [round(t.metrics["test_acc"], 4) for t in traces])
trace = results["l2rw"][0]
steps, zero = trace.series("zero_weight_share")
print("share of a batch weighted 0, every 100 steps:", [round(float(z), 2) for z in zero[::100]])
print("dev accuracy at steps", *zip(*[(int(s), round(float(a), 4)) for s, a in zip(*trace.series("dev_acc"))]))

# where a batch's weight goes, by class, for the first student
hooks = reweight.ReweightHooks(splits, cfg.dev_batch)
run = engine.Run(splits, cfg.student, [1000], hooks=hooks)
select = hooks.select


def logged(run, step):
    batch = select(run, step)
    if step % 100 == 0:
        share = torch.zeros(splits.num_classes).index_add_(0, batch.y[0], batch.weight[0])
        print(f"step {step}: share of the batch's weight per class", share.numpy().round(2))
    return batch


hooks.select = logged
engine.train(run, progress_bar=False)
per_class = confusion(run.students.member(0), splits.test, splits.num_classes).diagonal()
print("test accuracy per class:", per_class.numpy().round(2))
