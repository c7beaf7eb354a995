"""Exercises (labkit.exercises) and the course cells (labkit.course).

What is proven here: every check gives "unsolved" for None, "✓" for the right answer, the specific feedback for each
known mistake (the log10 reward, Φ's column instead of its row, the reversed KL ...) and "could not read" for garbage,
never an exception (except under LABKIT_EXERCISES=solved, CI's mode for the solution notebooks); the student version
has no solution left, its placeholders instead, and no outputs; a wrong answer typed into a notebook's real exercise
cell gets its specific feedback through a kernel, and the student version of the same cells reports "unsolved"; the
badge and install cell are generated from labkit.course.REPOSITORY, fetch nothing, and the install cell installs only
where labkit is missing. (The solution notebooks pass every check: tests/test_notebooks.py runs them strict.)
"""
from __future__ import annotations

import math

import nbformat
import numpy as np
import pytest

from conftest import REPO
from labkit import course, exercises as E
from labkit.repro import remote_references

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))


def _tags(cell) -> set[str]:
    return set(cell.metadata.get("tags", []))


def _with_exercises() -> list:
    return [p for p in NOTEBOOKS if any("exercise" in _tags(c) for c in nbformat.read(p, as_version=4).cells)]


# ---------------------------------------------------------------- the checks

def _softmax(z):
    e = np.exp(np.asarray(z) - np.max(z))
    return e / e.sum()


P, PHI = np.array(E.DLF_P), np.array(E.DLF_PHI)
PT, PS = _softmax(np.array(E.LOT_TEACHER) / E.LOT_T), _softmax(np.array(E.LOT_STUDENT) / E.LOT_T)
SIG = 1 / (1 + np.exp(-np.array(E.DLN_LOGITS)))
VALUES = [0.970, 0.975, 0.972, 0.969, 0.971, 0.974, 0.973, 0.968]
HALF = 2.365 * np.std(VALUES, ddof=1) / math.sqrt(8)
CONFUSION = np.stack([np.eye(3), np.array([[0.9, 0.02, 0.08], [0.01, 0.95, 0.04], [0.3, 0.1, 0.6]])])

# (check, context, right answer, [(wrong answer, words the feedback must contain)])
CASES = {
    "l2t_reward": (E.check_l2t_reward, (), -math.log(120 / 400),
                   [(-math.log10(120 / 400), "log10"), (math.log(120 / 400), "sign"), (0.3, "−log of it")]),
    "l2t_examples": (E.check_l2t_examples, (), (9600, 16000),
                     [((16000, 9600), "other way round"), ((9600, 5760), "divide"), ((300, 500), "steps · M")]),
    "l2t_noise": (E.check_l2t_noise, (), "less", [("more", "cannot make τ come sooner"), ("fewer", "answer 'more'")]),
    "dlf_loss": (E.check_dlf_loss, (), -1 / (1 + np.exp(-(PHI[0] @ np.log(P)))),
                 [(-1 / (1 + np.exp(-(PHI[:, 0] @ np.log(P)))), "ROW y"),
                  (-1 / (1 + np.exp(-(PHI[0] @ np.log10(P)))), "log10"),
                  (-(PHI[0] @ np.log(P)), "sigmoid is missing"), (-math.log(0.7), "cross-entropy")]),
    "dlf_noise_pairs": (E.check_noise_pairs, (), [(str((y + 1) % 10), str(y)) for y in range(10)],
                        [([(y, (y + 1) % 10) for y in range(10)], "transpose"), ([(1, 0)], "1 of your 1")]),
    "dln_rows": (E.check_dln_rows, (), [[SIG[0], SIG[j], 1, 0] for j in (1, 2)],
                 [([[_softmax(E.DLN_LOGITS)[0], _softmax(E.DLN_LOGITS)[j], 1, 0] for j in (1, 2)], "softmax"),
                  ([[SIG[j], SIG[0], 1, 0] for j in (1, 2)], "swapped"), ([1, 2, 3], "one row of 4")]),
    "dln_preprocess": (E.check_dln_preprocess, (), [(math.log(0.003) / 10, -1), (-1, math.exp(10) * 2e-5)],
                       [([(math.log10(0.003) / 10, -1), (-1, math.exp(10) * 2e-5)], "not log10"),
                        ([(math.log(0.003) / 10, -1), (math.log(2e-5) / 10, 1)], "tiny gradient")]),
    "dln_slopes": (E.check_dln_slopes, (), ("falls", "rises"), [(("rises", "falls"), "SGD"), (("up", "down"), "'falls'")]),
    "lot_kl": (E.check_lot_kl, (), E.LOT_T ** 2 * float((PT * np.log(PT / PS)).sum()),
               [(E.LOT_T ** 2 * float((PS * np.log(PS / PT)).sum()), "direction"),
                (float((PT * np.log(PT / PS)).sum()), "T² factor")]),
    "lot_cost": (E.check_lot_cost, (2, 3), 7, [(6, "model takes its own step"), (3, "each of the K students")]),
    "lot_kl_prediction": (E.check_lot_prediction, (), "lot", [("teacher-only", "never sees"), ("both", "answer 'lot'")]),
    "tour_half_width": (E.check_half_width, (VALUES,), HALF,
                        [(1.96 * np.std(VALUES, ddof=1) / math.sqrt(8), "t_(0.975, 7)"),
                         (2.365 * np.std(VALUES) / math.sqrt(8), "ddof = 1"), (100 * HALF, "percent")]),
    "tour_most_confused": (E.check_most_confused, (CONFUSION, ["a", "b", "c"]), ("c", "a"),
                           [(("a", "c"), "other way round"), (("b", "b"), "diagonal"), (("b", "c"), "largest is (c, a)")]),
}


@pytest.mark.parametrize("name", CASES)
def test_a_check_gives_specific_feedback(name, monkeypatch):
    monkeypatch.delenv(E.STRICT_ENV, raising=False)
    check, context, right, wrongs = CASES[name]
    result = check(None, *context)
    assert result.status == "unsolved" and str(result).startswith("unsolved:"), result
    result = check(right, *context)
    assert result.solved and str(result).startswith("✓"), result
    for answer, words in wrongs:
        result = check(answer, *context)
        assert result.status == "wrong" and str(result).startswith("✗"), (answer, result)
        assert words in result.message, f"{name}: the feedback on {answer!r} should say {words!r}: {result}"
    for garbage in ("seven", {"a": 1}, object()):   # never a traceback
        result = check(garbage, *context)
        assert result.status == "wrong", result


def test_the_brief_example_log10_reward():
    result = E.check_l2t_reward(0.523)   # −log10(120/400): the mistake named in the course's issue
    assert str(result) == "✗ you gave 0.523: did you use log10? the reward is the natural log"


def test_strict_mode_raises_only_when_not_solved(monkeypatch):
    monkeypatch.setenv(E.STRICT_ENV, "solved")
    assert E.check_lot_cost(3, 2, 1).solved
    for answer in (None, 2):
        with pytest.raises(AssertionError, match="lot_cost is not solved"):
            E.check_lot_cost(answer, 2, 1)


def test_the_checks_read_a_run_and_show_what_it_measured():
    from labkit.trace import Trace

    trace = Trace()
    grid = np.linspace(0, 1, 5)
    surface = grid[None, :] - grid[:, None]   # falls down the rows (σ(z_y)), rises along a row (σ(z_j))
    trace.log_array(0, loss_surface=surface)
    trace.log_array(10, loss_surface=2 * surface)
    assert "still teaches classification" in E.check_dln_slopes(("falls", "rises"), trace).message
    change = np.zeros((10, 10))
    change[[(y + 1) % 10 for y in range(10)], range(10)] = 0.5
    message = E.check_noise_pairs([((y + 1) % 10, y) for y in range(10)], None, change).message
    assert "+0.5 on those entries" in message and "did favour" in message
    teacher = Trace()
    for episode, (bad, good) in enumerate([(0.9, 0.9), (0.8, 0.9), (0.5, 0.9), (0.2, 0.9)]):
        teacher.log(episode, keep_rate_corrupted=bad, keep_rate_clean=good)
    assert "keeps 0.20 of the corrupted and 0.90 of the clean" in E.check_l2t_noise("less", teacher).message


def test_a_result_shows_once_as_html_and_text():
    r = E.check_lot_cost(3, 2, 1)
    assert r._repr_html_().count("✓") == 1 and "labkit-check-solved" in r._repr_html_()
    assert repr(r) == str(r)


# ---------------------------------------------------------------- the student version

def test_strip_solutions_keeps_the_rest_and_the_indent():
    source = "x = 1\nif x:\n    # BEGIN SOLUTION: y = None\n    y = 2\n    z = 3\n    # END SOLUTION\nprint(y)"
    stripped, blocks = course.strip_solutions(source)
    assert blocks == 1
    assert stripped == "x = 1\nif x:\n    y = None  # ← your answer\nprint(y)"


@pytest.mark.parametrize("source, words", [("# BEGIN SOLUTION: a = None\na = 1", "has no END"),
                                           ("a = 1\n# END SOLUTION", "without a BEGIN"),
                                           ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION", "inside the block")])
def test_unbalanced_markers_are_refused_by_name(source, words):
    with pytest.raises(ValueError, match=words):
        course.strip_solutions(source, "02, cell 7")


@pytest.mark.parametrize("path", _with_exercises(), ids=lambda p: p.stem)
def test_every_exercise_has_a_solution_and_a_check(path):
    nb = nbformat.read(path, as_version=4)
    answers = [i for i, c in enumerate(nb.cells) if "exercise" in _tags(c)]
    assert 2 <= len(answers) <= 3, f"{path.name}: {len(answers)} exercises (the course asks for two or three)"
    for i in answers:
        assert nb.cells[i].source.count("# BEGIN SOLUTION:") == 1, f"{path.name} cell {i}: one marked solution"
        check = nb.cells[i + 1]
        assert "check" in _tags(check) and "exercises.check_" in check.source, f"{path.name} cell {i + 1}"
        assert "def " not in nb.cells[i].source and "class " not in nb.cells[i].source
    assert answers[-1] + 1 == len(nb.cells) - 1, "the exercises end the notebook"


@pytest.mark.parametrize("path", _with_exercises(), ids=lambda p: p.stem)
def test_the_student_version_has_no_solution_left(path):
    nb = nbformat.read(path, as_version=4)
    student, blocks = course.student_notebook(nb, path.name)
    nbformat.validate(student)
    assert blocks == sum("exercise" in _tags(c) for c in nb.cells)
    for cell, original in zip(student.cells, nb.cells):
        if "exercise" in _tags(original):
            body = original.source.split("# BEGIN SOLUTION:")[1].split("# END SOLUTION")[0].split("\n", 1)[1]
            for line in filter(str.strip, body.split("\n")):
                assert line not in cell.source, f"solution line {line!r} left in the student version"
            assert "= None  # ← your answer" in cell.source
        elif cell.cell_type == "code":
            assert cell.source == original.source   # the rest of the notebook is untouched
    assert student.metadata["labkit"]["version"] == "student"


def test_labkit_exercises_writes_every_student_version(tmp_path):
    from labkit.cli import main

    assert main(["exercises", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.ipynb")) == [p.name for p in NOTEBOOKS]
    for path in _with_exercises():
        assert "# BEGIN SOLUTION" not in (tmp_path / path.name).read_text()


def _exercise_notebook(source_nb, index: int, answer: str | None):
    """The notebook's exercise set-up cell, exercise cell `index` (its solution replaced by `answer`, or the student
    placeholder when answer is None) and its check cell, as a notebook of their own."""
    setup = next(c for c in source_nb.cells if "exercises" in _tags(c) and c.cell_type == "code")
    cell = source_nb.cells[index]
    if answer is None:
        body = course.strip_solutions(cell.source)[0]
    else:
        head, rest = cell.source.split("# BEGIN SOLUTION:")
        body = head + answer + rest.split("# END SOLUTION", 1)[1]
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(setup.source), nbformat.v4.new_code_cell(body),
                nbformat.v4.new_code_cell(source_nb.cells[index + 1].source)]
    return nb


def _output_text(nb) -> str:
    return "".join(o.get("data", {}).get("text/plain", "") + o.get("text", "") for o in nb.cells[-1].outputs)


@pytest.mark.notebook
def test_a_wrong_answer_in_the_notebook_gets_its_feedback(tmp_path, monkeypatch):
    """The real exercise cells of notebook 02 (the l_Φ exercise) in a kernel: the column-instead-of-row mistake gets
    its sentence, the student version gets "unsolved", and neither raises."""
    import papermill as pm

    monkeypatch.delenv(E.STRICT_ENV, raising=False)
    nb = nbformat.read(REPO / "notebooks" / "02_l2t_dlf_dynamic_loss.ipynb", as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if "exercise" in _tags(c) and "check_dlf_loss" in nb.cells[i + 1].source)
    for answer, expected in (("loss = -1 / (1 + np.exp(-(phi[:, y] @ np.log(p))))\n", "✗ you gave -0.1936: you used "
                              "column y of Φ"), (None, "unsolved: compute l_Φ")):
        path = tmp_path / "exercise.ipynb"
        nbformat.write(_exercise_notebook(nb, index, answer), path)
        done = pm.execute_notebook(str(path), str(tmp_path / "out.ipynb"), kernel_name="python3", progress_bar=False)
        assert expected in _output_text(done), _output_text(done)


# ---------------------------------------------------------------- the course cells

def test_every_notebook_has_current_course_cells():
    assert course.badges(check=True) == [], "run `labkit course badges` (labkit.course) and commit the notebooks"


def test_badge_and_install_follow_the_repository_constant():
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    course.with_course_cells(nb, "00_tour.ipynb", repository="someone/fork", branch="dev")
    course.with_course_cells(nb, "00_tour.ipynb", repository="someone/fork", branch="dev")   # idempotent
    title = nb.cells[0].source
    assert title.count(course.BADGE_MARK) == 1
    assert "https://colab.research.google.com/github/someone/fork/blob/dev/notebooks/00_tour.ipynb" in title
    installs = [c for c in nb.cells if course.INSTALL_TAG in _tags(c)]
    assert len(installs) == 1 and "git+https://github.com/someone/fork@dev" in installs[0].source
    assert next(c for c in nb.cells if c.cell_type == "code") is installs[0]
    markdown_it = pytest.importorskip("markdown_it")   # with the docs extra (MyST)
    rendered = markdown_it.MarkdownIt().render(title)
    assert remote_references(rendered) == [], "the badge must not fetch an image"
    assert 'src="data:image/png;base64,' in rendered


def test_the_install_cell_installs_only_where_labkit_is_missing(monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    calls = []
    shell.register_magic_function(lambda line: calls.append(line), "line", "pip")
    source = course.install_source()
    assert shell.run_cell(source).success and calls == []           # labkit is here: nothing happens
    monkeypatch.setitem(__import__("sys").modules, "labkit", None)  # now `import labkit` fails, as in Colab
    assert shell.run_cell(source).success
    assert calls == [f'install -q "labkit @ git+https://github.com/{course.REPOSITORY}@{course.BRANCH}"']


def test_the_installed_package_is_complete():
    """The install cell builds a wheel from the repository: every package under labkit/ must be in it (an editable
    install hides a missing one)."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "labkit").rglob("__init__.py")}
    assert found <= listed, f"pyproject.toml [tool.setuptools] packages lacks {sorted(found - listed)}"
