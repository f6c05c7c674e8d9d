"""ablate.py keeps one grid per runs folder, its workers die with it, and a grid killed at any point finishes on
re-run with the results of an uninterrupted grid (issue 13, items 1 and 2). Tiny sizes, as tests/test_ablate.py."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import ablate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1")
TINY = dict(ablate.PRESETS["tiny"], workers=1,  # runs with an FID curve (ablate.CURVES); alchemist needs the proxy
            grid=[(None, None, 1.0), ("random", "random", 0.5), ("alchemist", "shift_gsample", 0.5)])
CLOCK = {"train_seconds", "eval_seconds"}  # wall-clock columns: the only ones that may differ

pytestmark = pytest.mark.usefixtures("one_thread")

# The grid in a fresh process that dies like kill -9 (os._exit) right after its N-th write of a file named NAME.
KILLED = """
import os, sys
sys.path.insert(0, {root!r})
import ablate, data, evaluate
ablate.PRESETS["tiny"] = {preset!r}
save, seen = data.atomic_save, []
def save_then_die(obj, path):
    save(obj, path)
    seen.append(os.path.basename(str(path)))
    if seen.count({name!r}) == {n}:
        os._exit(137)
data.atomic_save = evaluate.atomic_save = save_then_die
ablate.main({argv!r})
"""


def rerun(root, name="-", n=1):
    """The grid in a fresh process with ENV (one thread everywhere), killed after the n-th write of `name`."""
    code = KILLED.format(root=ROOT, preset=TINY, name=name, n=n, argv=argv(root))
    return subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=600)


def argv(root):
    return ["--preset", "tiny", "--seeds", "1", "--runs", str(root / "runs"), "--out", str(root / "results"),
            "--device", "cpu"]


def results(root):
    rows = list(csv.DictReader(open(root / "results" / "results.csv")))
    return [{k: v for k, v in r.items() if k not in CLOCK} for r in rows]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid_whole")
    # in a process like the killed ones: numpy's float64 FID moves in its last digits with the BLAS thread count
    assert rerun(root).returncode == 0
    return root


def test_a_grid_killed_at_any_point_finishes_on_rerun_with_the_uninterrupted_results(uninterrupted, tmp_path):
    """Killed in the proxy (after its checkpoint, before its report), in a training run (right after its last
    checkpoint: model.pt must already hold the last step), between a run's picture and its metrics.json, and after a
    run's trained.json; then a folder of the old order (metrics.json without its picture). Each re-run goes on, and
    the end is the uninterrupted grid's table."""
    full = tmp_path / "runs" / "train" / "full_s0"
    for name, n in [("proxy.pt", 1), ("train_state.pt", 1), ("metrics_samples.png", 1), ("trained.json", 1)]:
        r = rerun(tmp_path, name, n)
        assert r.returncode == 137, (name, r.stderr[-3000:])
        if name == "metrics_samples.png":
            assert (full / "metrics_samples.png").exists() and not (full / "metrics.json").exists()
    assert not (tmp_path / "runs" / "train" / "random_50_s0" / "metrics.json").exists()
    r = rerun(tmp_path)  # not killed: it ends
    assert r.returncode == 0, r.stderr[-3000:]
    assert results(tmp_path) == results(uninterrupted)
    os.remove(full / "metrics_samples.png")  # as a grid of the old order killed between metrics.json and the picture
    os.remove(tmp_path / "results" / "results.csv")
    assert rerun(tmp_path).returncode == 0
    assert (full / "metrics_samples.png").exists() and results(tmp_path) == results(uninterrupted)


def test_a_second_grid_on_a_locked_runs_folder_says_who_holds_it_and_a_dead_holders_lock_is_taken_over(
        tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(ablate.PRESETS, "tiny", TINY)
    runs = tmp_path / "runs"
    holder = subprocess.Popen([sys.executable, "-c", f"import sys, time; sys.path.insert(0, {ROOT!r}); import ablate; "
                               f"ablate.lock_runs({str(runs)!r}); print('locked', flush=True); time.sleep(600)"],
                              env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = sorted(os.listdir(runs))
        with pytest.raises(SystemExit) as e:
            ablate.main(["--preset", "tiny", "--runs", str(runs), "--out", str(tmp_path / "results"), "--device",
                         "cpu"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and f"process {holder.pid} " in err, err
        assert sorted(os.listdir(runs)) == before and not (tmp_path / "results").exists()  # nothing written
    finally:
        holder.kill()
        holder.wait()
    assert open(runs / "ablate.lock").read().startswith(f"{holder.pid} ")  # the dead holder's lock file is left...
    ablate.lock_runs(str(runs))  # ...and taken over
    assert open(runs / "ablate.lock").read().startswith(f"{os.getpid()} ")


def alive(pid):
    """A process that exists and is not a zombie (a dead child nobody has reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
def test_workers_and_the_resource_tracker_die_when_the_grid_process_is_killed():
    code = (f"import sys, time; sys.path.insert(0, {ROOT!r}); import ablate\n"
            "from multiprocessing import resource_tracker\n"
            "pool = ablate.worker_pool(2)\n"
            "[f.result() for f in [pool.submit(time.sleep, 0.1) for _ in range(4)]]\n"  # both workers up
            "pool.submit(time.sleep, 600); pool.submit(time.sleep, 600)\n"  # a run each, as a grid's workers would
            "print(*pool._processes, resource_tracker._resource_tracker._pid, flush=True)\n"
            "time.sleep(600)\n")
    grid = subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE, text=True)
    children = [int(p) for p in grid.stdout.readline().split()]
    assert len(children) == 3 and all(alive(p) for p in children)
    os.kill(grid.pid, signal.SIGKILL)
    grid.wait()
    deadline = time.time() + 20
    while any(alive(p) for p in children) and time.time() < deadline:
        time.sleep(0.2)
    left = [p for p in children if alive(p)]
    for p in left:  # do not leave them behind if the test fails
        os.kill(p, signal.SIGKILL)
    assert not left, f"still running after their grid was killed: {left}"
