"""labkit reproduce / report: names, resume after a kill, failures reported while others go on, exit codes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from labkit import cli, papers, repro


def write_notebook(path: Path, body: str) -> None:
    """A tiny notebook (no torch in the kernel, so it runs in seconds) with the standard parameters cell;
    `body` runs after it and should write metrics.json (the helper cell `finish()` does)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell('preset = "cpu"\nseed = 0\ndevice = "auto"\nout_dir = "."',
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "import json, os, uuid\nfrom pathlib import Path\n"
            "def finish(**extra):\n"
            "    m = dict(preset=preset, seed=seed, run_id=uuid.uuid4().hex,\n"
            "             static=os.environ.get('LABKIT_STATIC'), test_acc=0.1 * (seed + 1), **extra)\n"
            "    Path(out_dir, 'metrics.json').write_text(json.dumps(m))"),
        nbformat.v4.new_code_cell(body),
    ]
    nbformat.write(nb, path)


def metrics(out: Path, stem: str, seed: int, preset: str = "smoke") -> dict:
    return json.loads((repro.run_dir(out, stem, preset, seed) / "metrics.json").read_text())


def test_names_and_presets(tmp_path):
    for stem in ("00_tour", "01_l2t_data_teaching", "02_l2t_dlf_dynamic_loss"):
        write_notebook(tmp_path / f"{stem}.ipynb", "finish()")
    nbs = repro.discover(tmp_path)
    assert [p.stem for p in nbs] == ["00_tour", "01_l2t_data_teaching", "02_l2t_dlf_dynamic_loss"]
    stems = lambda names: [p.stem for p in repro.resolve(names, nbs)]  # noqa: E731
    assert stems([]) == [p.stem for p in nbs]
    assert stems(["tour"]) == ["00_tour"]
    assert stems(["02", "00"]) == ["00_tour", "02_l2t_dlf_dynamic_loss"]      # notebook order
    assert stems(["l2t_dlf"]) == ["02_l2t_dlf_dynamic_loss"]
    assert stems(["01_l2t_data_teaching"]) == ["01_l2t_data_teaching"]
    with pytest.raises(ValueError, match="'nope' is not known: choose from 00_tour, 01_l2t_data_teaching"):
        repro.resolve(["nope"], nbs)
    with pytest.raises(ValueError, match="'l2t' is ambiguous"):
        repro.resolve(["l2t"], nbs)
    with pytest.raises(ValueError, match="preset='fast' is not known: choose one of smoke, cpu, paper"):
        repro.check_preset("fast")
    assert cli.main(["reproduce", "--preset", "fast", "--notebooks", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert cli.main(["reproduce", "nope", "--notebooks", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert cli.main(["reproduce", "--seeds", "0", "--notebooks", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()


@pytest.mark.notebook   # executes tiny notebooks with papermill (about 15 s)
def test_failure_reported_others_go_on_then_resume(tmp_path, capsys):
    nbs, out = tmp_path / "notebooks", tmp_path / "runs"
    nbs.mkdir()
    write_notebook(nbs / "00_good.ipynb", "finish()")
    write_notebook(nbs / "01_bad.ipynb", "x = 1\nraise RuntimeError('boom at seed %d' % seed)")
    write_notebook(nbs / "02_silent.ipynb", "pass  # runs to the end but writes no metrics.json")
    write_notebook(nbs / "03_good.ipynb", "finish()")
    args = ["reproduce", "--preset", "smoke", "--seeds", "2", "--out", str(out), "--notebooks", str(nbs)]

    assert cli.main(args) == 1                       # some runs failed
    err = capsys.readouterr().err
    assert "FAILED 01_bad smoke seed 0: cell 3 of the executed notebook (execution count 4), starting 'x = 1'" in err and "RuntimeError: boom at seed 0" in err
    assert "FAILED 02_silent smoke seed 1" in err and "wrote no metrics.json" in err
    for stem in ("00_good", "03_good"):              # the notebook after the failures ran too
        for seed in (0, 1):
            d = repro.run_dir(out, stem, "smoke", seed)
            assert repro.is_complete(d, stem)
            assert (d / f"{stem}.html").is_file() and not list(d.glob("*.partial.ipynb"))
            m = metrics(out, stem, seed)
            assert (m["preset"], m["seed"], m["static"]) == ("smoke", seed, "1")   # parameters and env passed
    for stem in ("01_bad", "02_silent"):
        d = repro.run_dir(out, stem, "smoke", 0)
        assert not repro.is_complete(d, stem) and not (d / "metrics.json").exists()
        assert (d / f"{stem}.failed.ipynb").is_file()    # kept, stopped at the error, for reading

    # A run killed after its last cell but before the rename: metrics.json, a partial notebook, no notebook.
    killed = repro.run_dir(out, "00_good", "smoke", 1)
    os.replace(killed / "00_good.ipynb", killed / "00_good.partial.ipynb")
    kept = {(s, k): metrics(out, s, k)["run_id"] for s in ("00_good", "03_good") for k in (0, 1)}
    assert cli.main(args[:1] + ["00_good", "03"] + args[1:]) == 0
    err = capsys.readouterr().err
    assert "1 done, 3 already complete, 0 failed" in err
    assert repro.is_complete(killed, "00_good") and not (killed / "00_good.partial.ipynb").exists()
    assert metrics(out, "00_good", 1)["run_id"] != kept[("00_good", 1)]          # redone
    for key, run_id in kept.items():
        if key != ("00_good", 1):
            assert metrics(out, *key)["run_id"] == run_id                         # not redone

    text = repro.report(out)
    assert (out / "report.md").read_text() == text and (out / "report.html").is_file()
    assert "| 00_good | smoke | test_acc | 0.15 ± 0.071 (n=2)" in text
    assert "01_bad" not in text.split("Failed runs")[0]                  # no row for a notebook with no complete run
    assert "01_bad/smoke/seed-0/01_bad.failed.ipynb" in text.split("Failed runs")[1]


@pytest.mark.notebook   # executes a tiny notebook with papermill, twice (about 20 s)
def test_killed_process_resumes(tmp_path):
    """SIGKILL `labkit reproduce` while seed 1 runs; the rerun does only seed 1."""
    nbs, out = tmp_path / "notebooks", tmp_path / "runs"
    nbs.mkdir()
    hold = tmp_path / "HOLD"
    hold.touch()
    write_notebook(nbs / "00_slow.ipynb", f"import time\nwhile seed == 1 and Path({str(hold)!r}).exists():\n"
                                          "    time.sleep(0.2)\nfinish()")
    cmd = [sys.executable, "-m", "labkit.cli", "reproduce", "--preset", "smoke", "--seeds", "2", "--out", str(out),
           "--notebooks", str(nbs)]
    seed0, seed1 = (repro.run_dir(out, "00_slow", "smoke", k) for k in (0, 1))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ, CI="1"))
    try:
        deadline = time.monotonic() + 120
        while not (repro.is_complete(seed0, "00_slow") and (seed1 / "00_slow.partial.ipynb").exists()):
            assert proc.poll() is None and time.monotonic() < deadline, "the first run did not get going"
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not repro.is_complete(seed1, "00_slow") and not (seed1 / "metrics.json").exists()
    run_id = metrics(out, "00_slow", 0)["run_id"]
    hold.unlink()
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, CI="1"), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "skip  00_slow smoke seed 0" in done.stderr and "done  00_slow smoke seed 1" in done.stderr
    assert repro.is_complete(seed1, "00_slow") and metrics(out, "00_slow", 0)["run_id"] == run_id


def _fake_run(out: Path, stem: str, preset: str, seed: int, complete: bool = True, **values) -> None:
    d = repro.run_dir(out, stem, preset, seed)
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(dict(notebook=stem, preset=preset, seed=seed, **values)))
    if complete:
        (d / f"{stem}.ipynb").write_text("{}")


def test_report_against_papers(tmp_path, capsys):
    out = tmp_path / "runs"
    stem = "02_l2t_dlf_dynamic_loss"
    _fake_run(out, stem, "cpu", 0, student="mlp", ce_test_err_mean=2.0, ce_test_err_std=0.1,
              dlf_test_err_mean=1.9, lenet_dlf_test_err_mean=1.0, seconds=12.0)
    _fake_run(out, stem, "cpu", 1, student="mlp", ce_test_err_mean=2.2, ce_test_err_std=0.1,
              dlf_test_err_mean=2.1, lenet_dlf_test_err_mean=1.2, seconds=13.0)
    _fake_run(out, stem, "cpu", 2, complete=False, student="mlp", ce_test_err_mean=0.9, dlf_test_err_mean=0.9)  # killed
    _fake_run(out, stem, "paper", 0, student="lenet", ce_test_err_mean=1.1, dlf_test_err_mean=0.8)
    _fake_run(out, "04_lot_learning_from_teaching", "smoke", 0, headline_config="mnist_mlp_mlp", lot_test_acc_mean=0.9)
    _fake_run(out, "04_lot_learning_from_teaching", "paper", 0, headline_config="cifar10_20_56",
              lot_test_acc_mean=0.9, teacher_only_test_acc_mean=0.91)
    _fake_run(out, "00_tour", "smoke", 0, test_acc=0.97, test_loss=0.1, steps=300)
    _fake_run(out, "05_future", "smoke", 0, new_metric_mean=3.0, new_metric_std=0.1)             # not mapped yet
    assert cli.main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| Wu et al. (dlf) | 02_l2t_dlf_dynamic_loss | cpu | ce_test_err_mean | 2.1 ± 0.14 (n=2) % test error " \
           "| 1.94 % test error | recalled | MNIST, MLP, cross-entropy | +0.16 |" in text
    assert "| dlf_test_err_mean | 2 ± 0.14 (n=2) % test error | 1.69 % test error | recalled |" in text
    assert "| lenet_dlf_test_err_mean | 1.1 ± 0.14 (n=2) % test error | 0.77 % test error |" in text
    assert "| 02_l2t_dlf_dynamic_loss | paper | ce_test_err_mean | 1.1 ± 0 (n=1) % test error | 0.98 % test error" in text
    assert "| — | 04_lot_learning_from_teaching | smoke | lot_test_acc_mean | 0.9 ± 0 (n=1) | — |" in text
    assert "| paper | lot_test_acc_mean | 90 ± 0 (n=1) % test acc | 92.85 ± 0.04 % test acc | review | " \
           "CIFAR-10, LoT 20_56 | -2.85 |" in text
    assert "| paper | teacher_only_test_acc_mean | 91 ± 0 (n=1) % test acc | 92.1 ± 0.01 % test acc |" in text
    assert "| 00_tour | smoke | 100·(1 − test_acc) | 3 ± 0 (n=1) % test error | 1.94 % test error" in text
    assert "| 00_tour | smoke | test_loss | 0.1 ± 0 (n=1) |" in text
    assert "| steps |" not in text and "| seconds |" not in text
    assert "| — | 05_future | smoke | new_metric_mean | 3 ± 0 (n=1) | — |" in text
    assert "ce_test_err_std" not in text          # the killed seed 2 (0.9) is out: n=2 above
    html = (out / "report.html").read_text()
    assert "<td>recalled</td>" in html and "1.94 % test error" in html
    with pytest.raises(ValueError, match="is not a folder"):
        repro.report(tmp_path / "missing")


def test_comparisons_name_real_paper_numbers():
    for c in repro.COMPARISONS:
        assert papers.get(c.paper, c.reported).paper == c.paper
        assert c.convert in ("pct", "pct_err_from_acc", "same")
