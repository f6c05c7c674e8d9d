"""The course kit (course/): a fresh starter fails every graded test, the reference passes them all, each exercise's
tests fail on its own functions and pass with every exercise it does not need blanked, and the README shows the table.
"""
import ast
import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COURSE = os.path.join(ROOT, "course")
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def load(name):
    spec = importlib.util.spec_from_file_location(f"course_{name}", os.path.join(COURSE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make = load("make")  # puts course/ on sys.path for its own `import exercises`
exercises = make.exercises
TABLE = exercises.by_number()


def closure(n):
    """Exercise n and every exercise it needs, directly or not."""
    out = {n}
    for m in TABLE[n]["needs"]:
        out |= closure(m)
    return out


def run_make(out, numbers):
    cmd = [sys.executable, os.path.join(COURSE, "make.py"), "--out", str(out), "--exercises", ",".join(map(str, numbers))]
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert p.returncode == 0, p.stderr
    return out


def grade(student, numbers=None):
    """grade.py's exit code, {exercise: (passed, total)} and {exercise: [FAILED lines]}."""
    cmd = [sys.executable, os.path.join(COURSE, "grade.py"), "--student", str(student)]
    cmd += ["--exercise", ",".join(map(str, numbers))] if numbers else []
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    scores, failures, current = {}, {}, None
    for line in p.stdout.splitlines():
        m = re.match(r"exercise (\d+): .*: (\d+)/(\d+) tests passed", line)
        if m:
            current = int(m[1])
            scores[current], failures[current] = (int(m[2]), int(m[3])), []
        elif line.startswith("  FAILED"):
            failures[current].append(line)
    return p.returncode, scores, failures, p.stdout + p.stderr


# ----------------------------------------------------------------------------------------------------------------
# The table and the README (no torch, fast)

def test_the_table_has_six_or_more_exercises_of_one_to_three_hours_each_naming_real_functions():
    assert len(TABLE) >= 6 and sorted(TABLE) == list(range(1, len(TABLE) + 1))
    for n, e in TABLE.items():
        assert 1 <= e["hours"] <= 3 and e["points"] > 0 and all(m < n for m in e["needs"]), n
        assert e["goal"] and e["equations"] and e["hints"] and e["see"][0] and e["see"][1], n
        for file, name, task in e["blank"]:
            with open(os.path.join(ROOT, file)) as f:
                fn = make.find_function(ast.parse(f.read()), name)
            assert fn is not None and ast.get_docstring(fn), f"exercise {n}: {file}: {name} missing or undocumented"
            assert '"' not in task and "\\" not in task
        with open(os.path.join(COURSE, "tests", e["tests"])) as f:
            tests = [t for t in ast.parse(f.read()).body if isinstance(t, ast.FunctionDef) and t.name.startswith("test_")]
        assert tests and all(ast.get_docstring(t) for t in tests), f"{e['tests']}: every graded test names its property"


def test_every_file_of_the_kit_is_known_to_git_so_that_a_clone_and_a_copy_have_it():
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "course"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    on_disk = [os.path.relpath(os.path.join(d, f), ROOT) for d, dirs, files in os.walk(COURSE) for f in files
               if "__pycache__" not in d]
    assert sorted(on_disk) == sorted(listed), set(on_disk) ^ set(listed)  # e.g. a folder that .gitignore hides


def test_blanking_keeps_decorators_signature_and_docstring_and_the_file_imports():
    source = ('import functools\n\n\nclass A:\n    @property\n    def on(self):\n        """Doc."""\n'
              '        # a comment\n        return 1\n\n    @functools.lru_cache()\n    def f(self, x,\n'
              '          y=2):\n        """Two\n        lines."""\n        z = x\n        return z + y\n\n\n'
              'def g():\n    """G."""\n    return 3\n')
    out = make.blank(source, [("A.on", "exercise 9: A.on: task"), ("A.f", "exercise 9: A.f: task")], "x.py")
    assert out == ('import functools\n\n\nclass A:\n    @property\n    def on(self):\n        """Doc."""\n'
                   '        raise NotImplementedError("exercise 9: A.on: task")\n\n    @functools.lru_cache()\n'
                   '    def f(self, x,\n          y=2):\n        """Two\n        lines."""\n'
                   '        raise NotImplementedError("exercise 9: A.f: task")\n\n\ndef g():\n    """G."""\n'
                   '    return 3\n')


def test_the_readme_shows_the_table_as_it_is():
    with open(os.path.join(COURSE, "README.md")) as f:
        text = f.read()
    section = text.split(make.BEGIN + "\n", 1)[1].split(make.END, 1)[0]
    assert section == make.readme_section(), "course/README.md is stale: run python course/make.py --readme"


def test_make_refuses_a_used_folder_and_unknown_exercises_with_one_line(tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    for args, fragment in [(["--out", str(tmp_path / "used")], "not an empty folder"),
                           (["--out", str(tmp_path / "new"), "--exercises", "1,99"], "no exercise [99]")]:
        p = subprocess.run([sys.executable, os.path.join(COURSE, "make.py"), *args], capture_output=True, text=True)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and fragment in p.stderr, p.stderr
    assert not (tmp_path / "new").exists()


# ----------------------------------------------------------------------------------------------------------------
# Grading the starter and the reference

def test_a_fresh_starter_scores_zero_everywhere_and_the_reference_full_marks(tmp_path):
    starter = run_make(tmp_path / "starter", sorted(TABLE))
    assert not os.path.exists(starter / "tests" / "mutants.py")  # it quotes the reference's lines
    code, scores, failures, out = grade(starter)
    assert code == 1 and sorted(scores) == sorted(TABLE), out
    for n, (passed, total) in scores.items():
        assert passed == 0 and total > 0 and len(failures[n]) == total, out
        assert all("NotImplementedError: exercise" in line for line in failures[n]), out  # not an import error
    code, scores, failures, out = grade(ROOT)
    assert code == 0 and all(p == t > 0 for p, t in scores.values()) and sorted(scores) == sorted(TABLE), out
    total = sum(e["points"] for e in TABLE.values())
    assert f"total: {total:.1f}/{total} points" in out, out


def isolation_runs():
    """Copies to grade, as (blanked, passing, failing): for each exercise n, a copy with every exercise n does not
    need blanked, where n must pass (its tests call nothing else), graded together with the blanked exercises whose
    own needs are intact and that are not checked yet: each of their tests must fail with their own exercise's
    NotImplementedError (every test calls its exercise's functions). Six copies check both for six exercises."""
    out, checked = [], set()
    for n in sorted(TABLE):
        blanked = sorted(set(TABLE) - closure(n))
        failing = [m for m in blanked if m not in checked and not (closure(m) - {m}) & set(blanked)]
        checked |= set(failing)
        out.append((blanked, n, failing))
    return out + [([m], None, [m]) for m in sorted(set(TABLE) - checked)]


@pytest.mark.parametrize("blanked, passing, failing", [
    pytest.param(*run, id=f"blank{''.join(map(str, run[0]))}-pass{run[1] or ''}-fail{''.join(map(str, run[2]))}")
    for run in isolation_runs()])
def test_each_exercise_passes_with_what_it_does_not_need_blanked_and_fails_on_its_own_functions(tmp_path, blanked,
                                                                                               passing, failing):
    student = run_make(tmp_path / "copy", blanked) if blanked else ROOT
    code, scores, failures, out = grade(student, sorted(failing + ([passing] if passing else [])))
    if passing:
        assert scores[passing][0] == scores[passing][1] > 0, out
    for m in failing:
        assert scores[m][0] == 0 and all(f"NotImplementedError: exercise {m}:" in line for line in failures[m]), out
