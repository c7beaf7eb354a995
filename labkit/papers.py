"""The papers' reported numbers, each with where it comes from.

None of these numbers was measured by labkit, and none was checked against a paper's PDF by this project
(see `shared/reference/papers.md`). Each carries its provenance, which every report prints beside it:

- "paper":  read in the paper itself
- "review": read in a review of the paper (the project's founding documents)
- "code":   read in the paper's public code
- "third-party": an auto-generated or third-party summary
- "recalled": recalled from the paper, unverified
"""
from __future__ import annotations

from dataclasses import dataclass

PROVENANCES = ("paper", "review", "code", "third-party", "recalled")


@dataclass(frozen=True)
class Reported:
    paper: str        # "l2t" | "dlf" | "dln" | "lot"
    key: str          # matches a metrics.json key measured by the notebook, where one exists
    value: float
    unit: str         # "% test error", "% test acc", "perplexity", ...
    setting: str      # dataset, model, method, in words
    provenance: str   # one of PROVENANCES
    std: float | None = None

    def __post_init__(self):
        if self.provenance not in PROVENANCES:
            raise ValueError(f"provenance={self.provenance!r} is not allowed: choose one of {PROVENANCES}")

    def describe(self) -> str:
        spread = f" ± {self.std}" if self.std is not None else ""
        return f"{self.value}{spread} {self.unit} ({self.setting}; {self.provenance})"


PAPERS = {
    "l2t": "Fan et al., Learning to Teach, ICLR 2018",
    "dlf": "Wu et al., Learning to Teach with Dynamic Loss Functions, NeurIPS 2018",
    "dln": "Hai et al., L2T-DLN: Learning to Teach with Dynamic Loss Network, NeurIPS 2023",
    "lot": "Jin & Che et al., Learning from Teaching Regularization, arXiv 2402.02769 v1 (2024)",
}

_R = Reported
REPORTED: list[Reported] = [
    # L2T-DLF, Table 1, MNIST test error (%)
    _R("dlf", "mnist_mlp_ce_test_err", 1.94, "% test error", "MNIST, MLP, cross-entropy", "recalled"),
    _R("dlf", "mnist_mlp_dlf_test_err", 1.69, "% test error", "MNIST, MLP, L2T-DLF", "recalled"),
    _R("dlf", "mnist_lenet_ce_test_err", 0.98, "% test error", "MNIST, LeNet, cross-entropy", "recalled"),
    _R("dlf", "mnist_lenet_dlf_test_err", 0.77, "% test error", "MNIST, LeNet, L2T-DLF", "recalled"),
    # L2T-DLF, Table 2, CIFAR-10 test error (%)
    _R("dlf", "cifar10_resnet8_ce_test_err", 12.45, "% test error", "CIFAR-10, ResNet-8, cross-entropy", "recalled"),
    _R("dlf", "cifar10_resnet8_dlf_test_err", 10.82, "% test error", "CIFAR-10, ResNet-8, L2T-DLF", "recalled"),
    _R("dlf", "cifar10_resnet20_ce_test_err", 8.75, "% test error", "CIFAR-10, ResNet-20, cross-entropy", "recalled"),
    _R("dlf", "cifar10_resnet20_dlf_test_err", 7.63, "% test error", "CIFAR-10, ResNet-20, L2T-DLF", "recalled"),
    _R("dlf", "cifar10_resnet32_ce_test_err", 7.51, "% test error", "CIFAR-10, ResNet-32, cross-entropy", "recalled"),
    _R("dlf", "cifar10_resnet32_dlf_test_err", 6.95, "% test error", "CIFAR-10, ResNet-32, L2T-DLF", "recalled"),
    _R("dlf", "cifar10_wrn_dlf_test_err", 3.42, "% test error", "CIFAR-10, WRN, L2T-DLF", "review"),
    _R("dlf", "cifar10_densenet_dlf_test_err", 3.08, "% test error", "CIFAR-10, DenseNet-BC, L2T-DLF", "review"),
    # LoT, arXiv v1 CIFAR table (test accuracy %, mean ± std), teacher_student depths
    _R("lot", "cifar100_20_20_teacher_only_test_acc", 67.23, "% test acc", "CIFAR-100, PreResNet-20 teacher-only", "review", 0.26),
    _R("lot", "cifar100_20_20_lot_test_acc", 70.53, "% test acc", "CIFAR-100, LoT 20_20", "review", 0.26),
    _R("lot", "cifar100_20_56_lot_test_acc", 70.72, "% test acc", "CIFAR-100, LoT 20_56", "review", 0.05),
    _R("lot", "cifar100_56_56_teacher_only_test_acc", 73.30, "% test acc", "CIFAR-100, PreResNet-56 teacher-only", "review", 0.02),
    _R("lot", "cifar100_56_20_lot_test_acc", 75.51, "% test acc", "CIFAR-100, LoT 56_20", "review", 0.06),
    _R("lot", "cifar100_56_56_lot_test_acc", 75.38, "% test acc", "CIFAR-100, LoT 56_56", "review", 0.04),
    _R("lot", "cifar10_20_20_teacher_only_test_acc", 92.10, "% test acc", "CIFAR-10, PreResNet-20 teacher-only", "review", 0.01),
    _R("lot", "cifar10_20_20_lot_test_acc", 92.80, "% test acc", "CIFAR-10, LoT 20_20", "review", 0.05),
    _R("lot", "cifar10_20_56_lot_test_acc", 92.85, "% test acc", "CIFAR-10, LoT 20_56", "review", 0.04),
    _R("lot", "cifar10_56_56_teacher_only_test_acc", 93.37, "% test acc", "CIFAR-10, PreResNet-56 teacher-only", "review", 0.57),
    _R("lot", "cifar10_56_20_lot_test_acc", 94.35, "% test acc", "CIFAR-10, LoT 56_20", "review", 0.05),
    _R("lot", "cifar10_56_56_lot_test_acc", 94.28, "% test acc", "CIFAR-10, LoT 56_56", "review", 0.06),
    _R("lot", "ptb_lstm_teacher_only_ppl", 82.75, "perplexity", "PTB, LSTM, teacher-only (NeurIPS version)", "third-party"),
    _R("lot", "ptb_lstm_lot_ppl", 71.72, "perplexity", "PTB, LSTM, LoT (NeurIPS version)", "third-party"),
    # L2T and L2T-DLN: no single-number result could be verified; their notebooks say so.
]


def get(paper: str, key: str) -> Reported:
    """The reported number `key` of `paper` ("l2t", "dlf", "dln", "lot")."""
    if paper not in PAPERS:
        raise ValueError(f"paper={paper!r} is not known: choose one of {', '.join(PAPERS)}")
    for r in REPORTED:
        if r.paper == paper and r.key == key:
            return r
    keys = [r.key for r in REPORTED if r.paper == paper]
    raise ValueError(f"key={key!r} is not reported for {paper}: known keys are {', '.join(keys) or 'none'}")


def for_paper(paper: str) -> list[Reported]:
    if paper not in PAPERS:
        raise ValueError(f"paper={paper!r} is not known: choose one of {', '.join(PAPERS)}")
    return [r for r in REPORTED if r.paper == paper]
