"""ablate.py end to end on a tiny grid: every stage runs, the tables add up, and a re-run resumes instead of redoing."""
import csv
import os

import pytest

import ablate

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(size=16, n_train=160, n_val=40, n_test=40, proxy=["--preset", "quick", "--steps", "4"], primary_warmup=2,
            meta_steps=3, target=["--width", "16", "--depth", "1"], steps=4, batch_size=8, n_samples=16,
            sample_steps=2, curve_points=2, encoder_steps=20, workers=1, guide=["--width", "16", "--depth", "1"],
            guide_fraction=0.5, guidance=2.0, online_temperature=0.01,
            grid=[(None, None, 1.0), ("random", "random", 0.5), ("alchemist", "shift_gsample", 0.5),
                  ("alchemist_nogroup", "shift_gsample", 0.5), ("loss", "top_k", 0.2)])


@pytest.fixture(scope="module")
def grid(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setitem(ablate.PRESETS, "tiny", TINY)
    root = tmp_path_factory.mktemp("ablate")
    argv = ["--preset", "tiny", "--seeds", "2", "--runs", str(root / "runs"), "--out", str(root / "results"),
            "--device", "cpu"]
    ablate.main(argv)
    return root, argv


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_every_run_has_one_row_with_finite_metrics_and_the_tables_are_written(grid):
    root, _ = grid
    rows = list(csv.DictReader(open(root / "results" / "results.csv")))
    assert len(rows) == len(TINY["grid"]) * 2
    assert {(r["method"], float(r["keep"])) for r in rows} == {
        (ablate.method_name(s, st), k) for s, st, k in TINY["grid"]}
    assert all(float(r["fid"]) >= 0 and 0 <= float(r["geneval_overall"]) <= 1 for r in rows)
    assert {int(r["n_rows"]) for r in rows if r["method"] == "random"} == {80}  # keep 50% of 160 rows
    md = open(root / "results" / "results.md").read()
    for claim in ["1. Alchemist 50% beats Full", "2. Alchemist 20%", "3. Shift-Gsample", "4. The Group MLP", "5. "]:
        assert claim in md
    for f in ["selection.csv", "fid_curves.png", "samples.png", "samples/full.png"]:
        assert (root / "results" / f).exists(), f


def test_selection_diagnostics_are_the_keep_rates_of_the_saved_subsets(grid):
    root, _ = grid
    import data
    import numpy as np
    train = data.load_dataset(str(root / "runs" / "data"), "train")
    sel = {(r["method"], float(r["keep"])): r for r in csv.DictReader(open(root / "results" / "selection.csv"))}
    rows = np.load(root / "runs" / "subsets" / "loss_top_k_20_s0.npy")
    kept = np.isin(np.arange(len(train["defect"])), rows)
    assert abs(float(sel[("loss_top_k", 0.2)]["noise"]) - kept[train["defect"].numpy() == 2].mean()) < 1e-3


def test_a_rerun_resumes_from_the_finished_runs_and_redoes_only_a_missing_one(grid):
    root, argv = grid
    done = root / "runs" / "train" / "full_s0"
    stamps = lambda: {(p, f): os.path.getmtime(done.parent / p / f) for p in os.listdir(done.parent)
                      for f in ["model.pt", "metrics.json"] if (done.parent / p / f).exists()}
    os.remove(root / "runs" / "train" / "random_50_s1" / "metrics.json")  # "killed" before its evaluation ended
    before = stamps()
    ablate.main(argv)
    after = stamps()
    assert all(after[k] == before[k] for k in before)  # no model trained again, no finished run evaluated again
    assert (root / "runs" / "train" / "random_50_s1" / "metrics.json").exists()


def test_bad_flags_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        ablate.main(["--seeds", "0"])
    assert e.value.code == 2 and "--seeds" in capsys.readouterr().err


def test_the_online_grid_reports_equal_samples_and_equal_time_with_and_without_autoguidance(grid):
    root, argv = grid
    ablate.main(argv + ["--online"])
    rows = list(csv.DictReader(open(root / "results" / "online.csv")))
    assert sorted({r["method"] for r in rows}) == sorted(list(ablate.ONLINE) + ["alchemist_shift_gsample_50"])
    assert len(rows) == 4 * 2 and all(float(r["fid_autoguided"]) >= 0 for r in rows)
    scoring = {r["method"]: float(r["score_seconds"]) for r in rows}
    assert scoring["uniform"] == 0 < scoring["jest"]  # selection's cost is counted, uniform batches cost nothing
    md = open(root / "results" / "online.md").read()
    assert "At equal samples" in md and "At equal wall-clock time" in md
    assert (root / "runs" / "online" / "guide" / "model.pt").exists()


def test_methods_cuts_the_grid_and_prepares_only_what_the_cut_needs(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(ablate.PRESETS, "tiny", dict(TINY, gpu_workers=3))  # gpu_workers: CUDA only
    ablate.main(["--preset", "tiny", "--seeds", "1", "--methods", "random_50,full", "--runs", str(tmp_path / "runs"),
                 "--out", str(tmp_path / "results"), "--device", "cpu"])
    assert "2 training runs (2 methods x 1 seeds), 1 at a time" in capsys.readouterr().out  # the CPU's workers
    rows = list(csv.DictReader(open(tmp_path / "results" / "results.csv")))
    assert [(r["method"], r["seed"]) for r in rows] == [("full", "0"), ("random", "0")]  # the grid's order
    assert sorted(os.listdir(tmp_path / "runs" / "train")) == ["full_s0", "random_50_s0"]
    assert not (tmp_path / "runs" / "rate_alchemist").exists()  # no rater or heuristic score the cut does not use
    assert not (tmp_path / "runs" / "scores" / "loss.npy").exists()
    assert "not measured" in open(tmp_path / "results" / "results.md").read()  # claims without their methods


@pytest.mark.parametrize("extra", [["--methods", "full,alchemist_top_k_20"], ["--methods", "full", "--online"]])
def test_methods_outside_the_grid_or_with_online_exit_2_before_any_work(extra, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(ablate.PRESETS, "tiny", TINY)  # tiny, so that even a wrong answer costs seconds
    with pytest.raises(SystemExit) as e:
        ablate.main(["--preset", "tiny", "--runs", str(tmp_path / "runs"), "--device", "cpu"] + extra)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--methods" in err and len(err.strip().splitlines()) == 1
    assert ("alchemist_top_k_20 not in the tiny grid" in err) == ("--online" not in extra)
    assert not (tmp_path / "runs").exists()


def test_a_cut_without_the_shown_methods_stacks_no_samples_png(tmp_path):
    ablate.stack_pngs([], [], str(tmp_path / "samples.png"))  # e.g. --methods loss_top_k_20: nothing to show
    assert not (tmp_path / "samples.png").exists()
