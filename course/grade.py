"""course/grade.py -- grade a student's copy: run each exercise's graded tests against the student's own files.

Reads:   course/exercises.py and course/tests/ beside this script (the grader's copy, never the student's), and the
         student's stage files (proxy.py, prune.py, ...)
Writes:  nothing in the student's copy (no bytecode, no pytest cache); prints a score per exercise
Run:     python course/grade.py --student my_course [--exercise N] [--verbose]
How: one pytest run over the chosen exercises' test files, with the student's folder as the working directory and as
the only project folder on the import path (PYTHONPATH), so that `import proxy` finds the student's proxy.py; the
tests' conftest.py refuses to run if a stage module comes from anywhere else. For each failed test the grader prints
the property that failed (the test's docstring, or its name) and the error's first line. Exit status: 0 when every
test of every chosen exercise passes, 1 otherwise, 2 on bad input.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.join(HERE, "tests")
sys.path.insert(0, HERE)
import exercises  # noqa: E402


def fail(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def run_tests(student, files, verbose, timeout):
    """Run pytest on course/tests/<files> against `student`; returns (records, pytest's exit code, its output)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        env = dict(os.environ, PYTHONPATH=student, COURSE_STUDENT=student, COURSE_REPORT=report,
                   PYTHONDONTWRITEBYTECODE="1")
        env.setdefault("OMP_NUM_THREADS", "1")
        # no ini file, no cache, no conftest.py but the grader's: nothing of the student's copy or above it configures
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull, "--rootdir", TESTS,
               "--confcutdir", TESTS, *(os.path.join(TESTS, f) for f in files)]
        try:
            proc = subprocess.run(cmd, cwd=student, env=env, stdout=None if verbose else subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            fail(f"the graded tests ran past --timeout {timeout:g} s: is there an endless loop in the student's code?")
        records = []
        if os.path.exists(report):
            with open(report) as f:
                records = json.load(f)
        return records, proc.returncode, proc.stdout or ""


def main(argv=None):
    table = exercises.by_number()
    p = argparse.ArgumentParser(description="Grade a copy made by course/make.py: each exercise's graded tests "
                                            "against the copy's own files, with a score per exercise.")
    p.add_argument("--student", required=True, help="the student's copy of the project (a folder with proxy.py ...)")
    p.add_argument("--exercise", help=f"comma-separated exercise numbers to grade (default: all, {sorted(table)})")
    p.add_argument("--verbose", action="store_true", help="also show pytest's own output (tracebacks)")
    p.add_argument("--timeout", type=float, default=600, help="seconds allowed for all the graded tests (default 600)")
    a = p.parse_args(argv)
    student = os.path.realpath(a.student)
    try:
        chosen = sorted({int(x) for x in (a.exercise or ",".join(map(str, table))).split(",") if x.strip()})
    except ValueError:
        fail(f"--exercise {a.exercise!r}: give exercise numbers, e.g. 3 or 1,3")
    if not chosen or any(n not in table for n in chosen):
        fail(f"--exercise {a.exercise!r}: the course has exercises {sorted(table)}")
    if not os.path.isdir(student):
        fail(f"--student {a.student}: no such folder; make a copy with python course/make.py --out FOLDER")
    needed = sorted({file for n in chosen for file, _, _ in table[n]["blank"]})
    missing = [f for f in needed if not os.path.isfile(os.path.join(student, f))]
    if missing:
        fail(f"--student {a.student}: not a copy of the project (no {', '.join(missing)}); "
             "make one with python course/make.py --out FOLDER")
    files = [table[n]["tests"] for n in chosen]
    records, code, output = run_tests(student, files, a.verbose, a.timeout)
    if not records and code not in (0, 1):  # pytest itself failed before any test ran (e.g. a conftest refusal)
        last = [line for line in output.strip().splitlines() if line.strip()][-1:] or ["no output"]
        fail(f"the graded tests did not run (pytest exit {code}): {last[0][:200]}")
    total_points, got_points, all_passed = 0, 0.0, True
    for n in chosen:
        e, mine = table[n], [r for r in records if r["file"] == table[n]["tests"]]
        passed = sum(r["outcome"] == "passed" for r in mine)
        points = e["points"] * passed / len(mine) if mine else 0.0
        total_points, got_points = total_points + e["points"], got_points + points
        all_passed &= bool(mine) and passed == len(mine)
        print(f"exercise {n}: {e['title']}: {passed}/{len(mine)} tests passed, {points:.1f}/{e['points']} points")
        for r in mine:
            if r["outcome"] != "passed":
                print(f"  FAILED {r['property']}" + (f" -- {r['message']}" if r["message"] else ""))
    print(f"total: {got_points:.1f}/{total_points} points" + ("" if all_passed else
          "  (python course/grade.py --student DIR --exercise N --verbose shows the tracebacks)"))
    sys.exit(0 if all_passed else 1)


if __name__ == "__main__":
    main()
