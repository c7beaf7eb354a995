"""The papers' reported numbers, each with where it comes from.

None of these numbers was measured by labkit, and none was checked against a paper's PDF by this project (see
`shared/reference/papers.md`). Each carries its provenance, which every report and notebook prints beside it:

- "paper":       read in the paper itself
- "ai-summary":  read in one of the project's founding documents, which are AI-generated summary pages of the
                 papers (each says so at its end), not peer reviews: a summary's number, unverified
- "code":        read in the paper's public code
- "third-party": an auto-generated or third-party summary found elsewhere
- "recalled":    recalled from the paper, unverified

A measurement is set beside a reported number only in the same setting: the same paper, dataset, student
model, method and metric (`matching`).
"""
from __future__ import annotations

from dataclasses import dataclass

PROVENANCES = ("paper", "ai-summary", "code", "third-party", "recalled")
PROVENANCE_WORDS = {"paper": "read in the paper", "ai-summary": "from an AI-generated summary page, unverified",
                    "code": "read in the public code", "third-party": "third-party summary, unverified",
                    "recalled": "recalled, unverified"}


@dataclass(frozen=True)
class Reported:
    paper: str        # "l2t" | "dlf" | "dln" | "lot"
    dataset: str      # "mnist", "cifar10", "cifar100", "ptb"
    model: str        # the student model as labkit names it (the LoT pair as "preresnet20/preresnet56")
    method: str       # the method's key in metrics.json ("ce", "l2t-dlf", "teacher-only", "lot", ...)
    metric: str       # "test_acc" (a fraction in labkit; papers give %), "test_ppl"
    value: float      # as the paper gives it: % for accuracies and errors
    unit: str         # "% test error", "% test acc", "perplexity"
    provenance: str
    std: float | None = None
    setting: str = ""

    def __post_init__(self):
        if self.provenance not in PROVENANCES:
            raise ValueError(f"provenance={self.provenance!r} is not allowed: choose one of {PROVENANCES}")

    def in_metric(self) -> float:
        """The number in labkit's metric: an accuracy as a fraction (from % accuracy or % error)."""
        if self.unit == "% test error":
            return 1 - self.value / 100
        if self.unit == "% test acc":
            return self.value / 100
        return self.value

    def describe(self) -> str:
        spread = f" ± {self.std}" if self.std is not None else ""
        return f"{self.value}{spread} {self.unit} ({self.setting}; {PROVENANCE_WORDS[self.provenance]})"


PAPERS = {
    "l2t": "Fan et al., Learning to Teach, ICLR 2018",
    "dlf": "Wu et al., Learning to Teach with Dynamic Loss Functions, NeurIPS 2018",
    "dln": "Hai et al., L2T-DLN: Learning to Teach with Dynamic Loss Network, NeurIPS 2023",
    "lot": "Jin & Che et al., Learning from Teaching Regularization, arXiv 2402.02769 v1 (2024)",
}


def _dlf(dataset: str, model: str, method: str, value: float, provenance: str = "recalled") -> Reported:
    return Reported("dlf", dataset, model, method, "test_acc", value, "% test error", provenance,
                    setting=f"{dataset}, {model}, {method}, the paper's budget")


def _lot(dataset: str, teacher: int, student: int, method: str, value: float, std: float) -> Reported:
    return Reported("lot", dataset, f"preresnet{teacher}/preresnet{student}", method, "test_acc", value,
                    "% test acc", "ai-summary", std, setting=f"{dataset}, PreResNet-{teacher} teacher, "
                    f"PreResNet-{student} students, {method}, v1 table")


REPORTED: list[Reported] = [
    # L2T-DLF, Table 1, MNIST test error (%)
    _dlf("mnist", "mlp", "ce", 1.94), _dlf("mnist", "mlp", "l2t-dlf", 1.69),
    _dlf("mnist", "lenet", "ce", 0.98), _dlf("mnist", "lenet", "l2t-dlf", 0.77),
    # L2T-DLF, Table 2, CIFAR-10 test error (%)
    _dlf("cifar10", "resnet8", "ce", 12.45), _dlf("cifar10", "resnet8", "l2t-dlf", 10.82),
    _dlf("cifar10", "resnet20", "ce", 8.75), _dlf("cifar10", "resnet20", "l2t-dlf", 7.63),
    _dlf("cifar10", "resnet32", "ce", 7.51), _dlf("cifar10", "resnet32", "l2t-dlf", 6.95),
    _dlf("cifar10", "wrn", "l2t-dlf", 3.42, "ai-summary"), _dlf("cifar10", "densenet-bc", "l2t-dlf", 3.08, "ai-summary"),
    # LoT, arXiv v1 CIFAR table (test accuracy %, mean ± std); the teacher-only model has no students
    _lot("cifar100", 20, 20, "teacher-only", 67.23, 0.26), _lot("cifar100", 20, 20, "lot", 70.53, 0.26),
    _lot("cifar100", 20, 56, "lot", 70.72, 0.05), _lot("cifar100", 56, 56, "teacher-only", 73.30, 0.02),
    _lot("cifar100", 56, 20, "lot", 75.51, 0.06), _lot("cifar100", 56, 56, "lot", 75.38, 0.04),
    _lot("cifar10", 20, 20, "teacher-only", 92.10, 0.01), _lot("cifar10", 20, 20, "lot", 92.80, 0.05),
    _lot("cifar10", 20, 56, "lot", 92.85, 0.04), _lot("cifar10", 56, 56, "teacher-only", 93.37, 0.57),
    _lot("cifar10", 56, 20, "lot", 94.35, 0.05), _lot("cifar10", 56, 56, "lot", 94.28, 0.06),
    # the official PTB script's LSTM: 2 layers of 650 units (papers.md §4.3)
    Reported("lot", "ptb", "lstm_lm-2x650", "teacher-only", "test_ppl", 82.75, "perplexity", "third-party",
             setting="PTB, 2-layer 650-unit LSTM, teacher-only (NeurIPS version)"),
    Reported("lot", "ptb", "lstm_lm-2x650", "lot", "test_ppl", 71.72, "perplexity", "third-party",
             setting="PTB, 2-layer 650-unit LSTM, LoT (NeurIPS version)"),
    # L2T and L2T-DLN: no single-number result could be verified; their notebooks say so.
]


def for_paper(paper: str) -> list[Reported]:
    if paper not in PAPERS:
        raise ValueError(f"paper={paper!r} is not known: choose one of {', '.join(PAPERS)}")
    return [r for r in REPORTED if r.paper == paper]


def matching(paper: str | None, dataset: str, model: str, method: str, metric: str) -> Reported | None:
    """The paper's number in exactly this setting (paper, dataset, student model, method, metric), or None."""
    for r in REPORTED:
        if (r.paper, r.dataset, r.model, r.method, r.metric) == (paper, dataset, model, method, metric):
            return r
    return None


def beside(experiment: dict) -> list[dict]:
    """For each method of an experiment (`repro.experiment`) that the paper reports in the same setting: the
    measured estimate, the paper's number (in labkit's metric) with its provenance, and the gap. An experiment on a
    changed training split (a scenario: label noise, imbalance, a subsample) is not the paper's setting: none."""
    rows = []
    if experiment.get("scenario"):
        return rows
    for method, m in experiment["methods"].items():
        r = matching(experiment.get("paper"), experiment["dataset"], experiment["model"], method, experiment["metric"])
        if r is None:
            continue
        est = m["estimate"]
        rows.append(dict(method=method, measured=est["mean"], half_width=est["half_width"], n=est["n"],
                         paper=r.in_metric(), reported=r.describe(), provenance=r.provenance,
                         gap=None if est["n"] == 0 else est["mean"] - r.in_metric()))
    return rows
