"""course/make_snapshots.py -- regenerate the graded tests' snapshots from the reference implementation.

Reads:   the reference's stage files (this repository's root), course/tests/tiny.py (the fixed tiny setups)
Writes:  course/snapshots/ex3_meta_step.json (two meta steps in float64: the rater's weights, fingerprints of the
         primary and the reference, the running scale and baseline, what meta_step returned)
Run:     python course/make_snapshots.py      (from a checkout of the reference; rerun after an intended change of
         the method, and commit the file with it)
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.join(HERE, "tests")]  # the reference's stage files, then tiny.py
import torch  # noqa: E402

import tiny  # noqa: E402


def main():
    torch.set_num_threads(1)
    path = os.path.join(HERE, "snapshots", "ex3_meta_step.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(tiny.meta_steps_snapshot(), f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
