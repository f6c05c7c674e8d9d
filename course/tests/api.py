"""The functions an exercise blanks, looked up in the student's modules through course/exercises.py: a graded test
names them once, by their place in the table, so that renaming or moving one is a single edited line there."""
import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # course/: exercises.py, no stages
import exercises  # noqa: E402


def exercise_api(number):
    """Exercise `number`'s blanked functions in table order, from the modules on the import path (the student's);
    a method stands for its class, which comes once, where its first method is listed."""
    out = []
    for file, name, _ in exercises.by_number()[number]["blank"]:
        obj = getattr(importlib.import_module(file[:-3]), name.split(".")[0])
        if not any(o is obj for o in out):
            out.append(obj)
    return out
