"""ablate.py end to end: the one-minute `--preset tiny` trial runs every stage, the tables add up, a re-run resumes
instead of redoing, and the claims are decided by the figures (checked on hand-made rows)."""
import csv
import os
import sys

import numpy as np
import pytest

import ablate

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """`python ablate.py --preset tiny` as a reader would run it (here with 2 seeds and its own folders)."""
    root = tmp_path_factory.mktemp("ablate")
    argv = ["--preset", "tiny", "--seeds", "2", "--runs", str(root / "runs"), "--out", str(root / "results"),
            "--device", "cpu"]
    ablate.main(argv)
    return root, argv


def test_the_tiny_trial_writes_one_row_per_run_with_the_oracle_and_the_recovered_share(grid, capsys):
    root, _ = grid
    rows = list(csv.DictReader(open(root / "results" / "results.csv")))
    tiny = ablate.PRESETS["tiny"]["grid"]
    assert len(rows) == len(tiny) * 2
    assert {r["method"] for r in rows} == {"oracle", "full", "random", "alchemist_shift_gsample"}
    n_clean = (np.asarray(__import__("data").load_dataset(str(root / "runs" / "data"))["defect"]) == 0).sum()
    assert {int(r["n_rows"]) for r in rows if r["method"] == "oracle"} == {n_clean}
    assert {int(r["n_rows"]) for r in rows if r["method"] == "random"} == {100}  # keep 50% of 200 rows
    by = {(r["method"], r["seed"]): r for r in rows}
    for r in rows:  # recovered = (FID_full - FID) / (FID_full - FID_oracle), paired by seed
        full, oracle = by[("full", r["seed"])], by[("oracle", r["seed"])]
        expect = (float(full["fid"]) - float(r["fid"])) / (float(full["fid"]) - float(oracle["fid"]))
        assert float(r["recovered"]) == pytest.approx(expect)
    assert {float(by[("full", s)]["recovered"]) for s in "01"} == {0.0}
    assert {float(by[("oracle", s)]["recovered"]) for s in "01"} == {1.0}
    for f in ["results.md", "selection.csv", "fid_curves.png", "samples.png"]:
        assert (root / "results" / f).exists(), f


def test_selection_diagnostics_are_the_keep_rates_of_the_saved_subsets(grid):
    root, _ = grid
    import data
    train = data.load_dataset(str(root / "runs" / "data"), "train")
    sel = {(r["method"], float(r["keep"])): r for r in csv.DictReader(open(root / "results" / "selection.csv"))}
    rows = np.load(root / "runs" / "subsets" / "alchemist_shift_gsample_50_s0.npy")  # seed 0's subset
    kept = np.isin(np.arange(len(train["defect"])), rows)
    for k, name in enumerate(train["defect_names"]):
        if (train["defect"] == k).any():
            assert float(sel[("alchemist_shift_gsample", 0.5)][name]) == pytest.approx(
                kept[train["defect"].numpy() == k].mean(), abs=1e-3)
    assert float(sel[("oracle", 0.6)]["clean"]) == 1.0 and float(sel[("oracle", 0.6)]["noise"]) == 0.0


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
    import online_grid  # bench/online_grid.py, on the grid's own runs folder
    root, argv = grid
    online_grid.main(argv)
    rows = list(csv.DictReader(open(root / "results" / "online.csv")))
    assert sorted({r["method"] for r in rows}) == sorted(list(online_grid.MODES.values()) + ["alchemist_shift_gsample_50"])
    assert len(rows) == 4 * 2 and all(float(r["fid_autoguided"]) >= 0 for r in rows)
    scoring = {r["method"]: float(r["score_seconds"]) for r in rows}
    assert scoring["uniform"] == 0 < scoring["jest"]  # selection's cost is counted, uniform batches cost nothing
    md = open(root / "results" / "online.md").read()
    assert "At equal samples" in md and "At equal wall-clock time" in md
    assert (root / "runs" / "online" / "guide" / "model.pt").exists()


def fake_rows(fid, gen):
    """Rows for the claims: {(method, keep): ([FID per seed], [GenEval per seed])}."""
    return [{"method": m, "keep": str(k), "seed": str(s), "fid": str(fid[(m, k)][s]), "geneval_overall":
             str(gen[(m, k)][s]), "recovered": "", "recovered_geneval": "", "curve": ""}
            for (m, k) in fid for s in range(len(fid[(m, k)]))]


def test_claims_hold_only_where_the_difference_exceeds_twice_the_larger_seed_std_or_the_spread(monkeypatch):
    monkeypatch.setattr(ablate, "SPREAD", {"fid": 0.0, "geneval_overall": 0.0})  # the seeds' std alone first
    base = {("full", 1.0): [0.030, 0.032, 0.034], ("random", 0.5): [0.028, 0.030, 0.032],
            ("alchemist_shift_gsample", 0.2): [0.0290, 0.0300, 0.0310], ("alchemist_top_k", 0.2): [0.020, 0.021, 0.022],
            ("alchemist_gsample", 0.2): [0.029, 0.030, 0.031],
            ("alchemist_nogroup_shift_gsample", 0.5): [0.010, 0.011, 0.012]}
    fid = {**base, ("alchemist_shift_gsample", 0.5): [0.010, 0.011, 0.012]}
    gen = {k: [0.9 - 10 * f for f in v] for k, v in fid.items()}  # GenEval moves with FID here
    text = "\n".join(ablate.claims(fake_rows(fid, gen)))
    lines = {line.split(":")[0]: line for line in text.split("\n")}
    assert "**holds**" in lines["1. Alchemist 50% beats Full"]  # 0.011 vs 0.032: far outside 2 x 0.0016
    assert "**holds**" in lines["2. Alchemist 20% matches Random 50%"]  # a tie counts as matching
    assert "**does not hold**" in lines["3a. Shift-Gsample beats Top-K (20%)"]  # Top-K is better by far
    assert "not decided" in lines["3b. Shift-Gsample beats Gsample (20%)"]  # identical figures: a tie
    assert "not decided" in lines["4. The Group MLP helps (Shift-Gsample 50%)"]
    fid[("alchemist_shift_gsample", 0.5)] = [0.030, 0.020, 0.025]  # mean 0.025 < 0.032, but the seeds spread 0.004
    gen = {k: [0.9 - 10 * f for f in v] for k, v in fid.items()}
    lines = {line.split(":")[0]: line for line in ablate.claims(fake_rows(fid, gen))}
    assert "not decided" in lines["1. Alchemist 50% beats Full"]
    fid[("alchemist_shift_gsample", 0.5)] = [0.010, 0.011, 0.012]  # 0.021 apart: holds, until SPREAD's floor is 0.011
    gen = {k: [0.9 - 10 * f for f in v] for k, v in fid.items()}
    for floor, verdict in [(0.010, "**holds**"), (0.011, "not decided")]:
        monkeypatch.setattr(ablate, "SPREAD", {"fid": floor, "geneval_overall": 10 * floor})
        assert verdict in {l.split(":")[0]: l for l in ablate.claims(fake_rows(fid, gen))}["1. Alchemist 50% beats Full"]


def test_a_cut_without_any_subset_writes_an_empty_selection_table(tmp_path):
    ablate.main(["--preset", "tiny", "--seeds", "1", "--methods", "full", "--runs", str(tmp_path / "runs"),
                 "--out", str(tmp_path / "results"), "--device", "cpu"])
    assert open(tmp_path / "results" / "selection.csv").read().splitlines() == [
        "method,keep,clean,misaligned,noise,blur,watermark,duplicate"]
    md = open(tmp_path / "results" / "results.md").read()
    assert "| full | 100% |" in md and "What each selection keeps" not in md


def test_methods_cuts_the_grid_and_prepares_only_what_the_cut_needs(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(ablate.PRESETS, "tiny", dict(ablate.PRESETS["tiny"], gpu_workers=3))  # CUDA only
    ablate.main(["--preset", "tiny", "--seeds", "1", "--methods", "random_50,full", "--runs", str(tmp_path / "runs"),
                 "--out", str(tmp_path / "results"), "--device", "cpu"])
    assert "2 training runs (2 methods x 1 seeds), 2 at a time" in capsys.readouterr().out  # the CPU's workers
    rows = list(csv.DictReader(open(tmp_path / "results" / "results.csv")))
    assert [(r["method"], r["seed"]) for r in rows] == [("full", "0"), ("random", "0")]  # the grid's order
    assert sorted(os.listdir(tmp_path / "runs" / "train")) == ["full_s0", "random_50_s0"]
    assert not (tmp_path / "runs" / "rate_alchemist").exists()  # no rater or heuristic score the cut does not use
    assert not (tmp_path / "runs" / "scores" / "loss.npy").exists()
    assert "not measured" in open(tmp_path / "results" / "results.md").read()  # claims without their methods


def test_methods_outside_the_grid_exit_2_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        ablate.main(["--preset", "tiny", "--runs", str(tmp_path / "runs"), "--device", "cpu", "--methods",
                     "full,alchemist_top_k_20"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--methods" in err and len(err.strip().splitlines()) == 1
    assert "alchemist_top_k_20 not in the tiny grid" in err
    assert not (tmp_path / "runs").exists()



