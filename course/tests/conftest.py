"""The graded tests' guard and report: stage modules must come from the student's copy; one record per test.

grade.py sets COURSE_STUDENT (the student's folder, also the working directory and PYTHONPATH) and COURSE_REPORT
(where to write the records: file, test name, property, outcome, first line of the error). Run by hand, with
`python -m pytest course/tests` from a copy's root, the copy itself is the student.
"""
import json
import os
import sys

import pytest

STAGES = ["data", "proxy", "rater", "metagrad", "prune", "train_t2i", "evaluate"]
RECORDS = {}


def student_dir():
    return os.path.realpath(os.environ.get("COURSE_STUDENT", os.getcwd()))


def pytest_configure(config):
    """Refuse to grade when a stage module on the path is not the student's (e.g. the reference's copy)."""
    student = student_dir()
    for name in STAGES:
        here = next((p for p in sys.path if os.path.isfile(os.path.join(p or os.getcwd(), name + ".py"))), None)
        if here is None or os.path.realpath(here or os.getcwd()) != student:
            raise pytest.UsageError(f"{name}.py would be imported from {here!r}, not from the student's copy "
                                    f"{student}: run the grader from course/grade.py")


def short(excinfo):
    """The error's type and the first line of its message (an assertion's own message comes first)."""
    text = str(excinfo.value).strip().splitlines()
    return f"{excinfo.typename}: {text[0][:200]}" if text else excinfo.typename


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    rep = (yield).get_result()
    doc = (getattr(item, "function", None) and item.function.__doc__ or "").strip()
    key = item.nodeid
    record = RECORDS.setdefault(key, dict(file=os.path.basename(str(item.fspath)), test=item.name,
                                          property=(" ".join(doc.split("\n\n")[0].split()) or item.name) +
                                          (f" [{item.callspec.id}]" if hasattr(item, "callspec") else ""),
                                          outcome="passed", message=""))
    if rep.failed and record["outcome"] == "passed":
        record.update(outcome="failed", message=short(call.excinfo) if call.excinfo else rep.when + " failed")
    elif rep.skipped:
        record.update(outcome="skipped", message="skipped")


def pytest_collectreport(report):
    if report.failed:  # a test file that does not import: one failed record standing for the whole file
        lines = [line for line in str(report.longrepr).splitlines() if line.startswith("E ")]
        RECORDS[report.nodeid] = dict(file=os.path.basename(report.nodeid), test="(import)",
                                      property="the test file imports your modules", outcome="failed",
                                      message=(lines[-1][1:].strip() if lines else "collection failed")[:200])


def pytest_sessionfinish(session):
    path = os.environ.get("COURSE_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(list(RECORDS.values()), f)
