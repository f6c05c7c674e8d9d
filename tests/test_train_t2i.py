"""Properties of the target training script (train_t2i.py), checked through its command line at tiny sizes."""
import os

import numpy as np
import pytest
import torch

import data
import proxy
import train_t2i
from conftest import assert_same, weights

TINY = ["--width", "32", "--depth", "1", "--batch-size", "8", "--device", "cpu", "--grid-every", "0"]


pytestmark = pytest.mark.usefixtures("one_thread")




def test_resume_through_the_cli_gives_the_uninterrupted_runs_weights_and_ema(tiny_shapes, tmp_path):
    whole, split = str(tmp_path / "whole"), str(tmp_path / "split")
    train_t2i.main(["--data", tiny_shapes, "--out", whole, "--steps", "6", *TINY,
                    "--grid-every", "2", "--snapshot-every", "3"])
    train_t2i.main(["--data", tiny_shapes, "--out", split, "--steps", "3", *TINY])
    train_t2i.main(["--data", tiny_shapes, "--out", split, "--steps", "6", "--resume", *TINY])
    for name in ["train_state.pt", "model.pt"]:
        assert_same(weights(os.path.join(whole, name)), weights(os.path.join(split, name)))
    assert_same(weights(os.path.join(whole, "train_state.pt"), "ema"), weights(os.path.join(split, "train_state.pt"), "ema"))
    state = torch.load(os.path.join(whole, "train_state.pt"), weights_only=True)
    assert state["step"] == 6 and {"optimizer", "rng", "ema", "args"} <= set(state)


def test_model_pt_holds_the_ema_weights_and_snapshots_load_with_load_proxy(tiny_shapes, tmp_path):
    out = str(tmp_path / "run")
    train_t2i.main(["--data", tiny_shapes, "--out", out, "--steps", "4", *TINY, "--grid-every", "2",
                    "--snapshot-every", "2", "--ckpt-every", "100"])
    state = torch.load(os.path.join(out, "train_state.pt"), weights_only=True)
    model, ckpt = proxy.load_proxy(os.path.join(out, "model.pt"), dataset=data.load_dataset(tiny_shapes))
    assert ckpt["weights"] == "ema" and ckpt["step"] == 4
    assert_same(model.state_dict(), state["ema"])  # a reader (evaluate.py) gets the EMA, not the raw weights
    assert any(not torch.equal(state["ema"][k], state["model"][k]) for k in state["model"])
    snap, _ = proxy.load_proxy(os.path.join(out, "snapshots", "step4.pt"))
    assert_same(snap.state_dict(), state["ema"])
    assert os.path.exists(os.path.join(out, "snapshots", "step2.pt"))
    assert sorted(f for f in os.listdir(out) if f.endswith(".png")) == ["samples.png", "samples_step2.png",
                                                                     "samples_step4.png"]
    log = open(os.path.join(out, "log.csv")).read().splitlines()
    assert log[0].startswith("step,loss") and log[-1].startswith("4,")


def test_training_on_a_subset_only_ever_sees_its_rows(tiny_shapes, tmp_path, monkeypatch, capsys):
    d = data.load_dataset(tiny_shapes)
    rows = np.arange(0, len(d["images"]), 7)  # every 7th row
    np.save(tmp_path / "subset.npy", rows)
    allowed = {bytes(d["images"][i].numpy()) for i in rows}
    seen, real_loss = [], proxy.rf_loss

    def spy(model, x0, tokens, **kw):  # every image the training loss is computed on
        seen.extend(bytes(((x + 1) * 127.5).round().byte().numpy()) for x in x0.cpu())
        return real_loss(model, x0, tokens, **kw)

    monkeypatch.setattr(proxy, "rf_loss", spy)
    train_t2i.main(["--data", tiny_shapes, "--subset", str(tmp_path / "subset.npy"), "--out", str(tmp_path / "run"),
                    "--steps", "5", *TINY, "--compile"])
    assert len(seen) == 5 * 8 and set(seen) <= allowed
    err = capsys.readouterr().err
    assert "--compile needs CUDA; ignored" in err  # on the CPU --compile warns and trains as usual
    assert torch.load(tmp_path / "run" / "model.pt", weights_only=True)["args"]["subset"] == str(tmp_path / "subset.npy")


@pytest.mark.parametrize("case", ["out_of_range", "duplicate", "empty", "no_data"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tiny_shapes, tmp_path, capsys, case):
    subset = {"out_of_range": [0, 5, 400], "duplicate": [1, 2, 2], "empty": []}.get(case, [0, 1])
    np.save(tmp_path / "subset.npy", np.array(subset, dtype=np.int64))
    source = str(tmp_path / "missing") if case == "no_data" else tiny_shapes
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        train_t2i.main(["--data", source, "--subset", str(tmp_path / "subset.npy"), "--out", str(out), *TINY])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error:") and err.count("\n") == 1, err
    assert not out.exists()


def test_resume_from_another_model_size_exits_2_and_leaves_the_run_untouched(tiny_shapes, tmp_path, capsys):
    out = str(tmp_path / "run")
    train_t2i.main(["--data", tiny_shapes, "--out", out, "--steps", "2", *TINY])
    before = {f: open(os.path.join(out, f), "rb").read() for f in os.listdir(out)}
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train_t2i.main(["--data", tiny_shapes, "--out", out, "--steps", "4", "--resume", *TINY, "--width", "48"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "another model size" in err and err.count("\n") == 1, err
    assert {f: open(os.path.join(out, f), "rb").read() for f in os.listdir(out)} == before


def test_help_explains_every_flag_and_the_equal_step_comparison(capsys):
    with pytest.raises(SystemExit) as e:
        train_t2i.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert e.value.code == 0 and "equal number of --steps" in text
    for flag in ["--data", "--subset", "--out", "--steps", "--batch-size", "--lr", "--preset", "--seed", "--device",
                 "--resume", "--compile", "--ckpt-every", "--snapshot-every", "--grid-every", "--ema"]:
        assert flag in text


# ----------------------------------------------------------------------------------------------------------------
# --curriculum: the released code's rank-bin curriculum

def test_curriculum_bins_the_ranking_and_weighs_bins_by_the_shifted_cosine_computed_by_hand():
    scores = np.random.default_rng(0).permutation(40).astype(np.float32)  # row i has rank 39 - scores[i]
    c = train_t2i.Curriculum(scores, steps=100)
    assert all(int(c.bin[i]) == int((39 - scores[i]) // 4) for i in range(40))  # 4 rows per bin, bin 0 = top
    for p in [0.0, 0.3, 0.5, 0.99]:
        by_hand = [0.5 * (1 + np.cos(np.pi * (p - b / 9))) for b in range(10)]
        assert np.allclose(c.weights(p).numpy(), by_hand, atol=1e-12)
    w0, w1 = c.weights(0.0).numpy(), c.weights(1.0).numpy()
    assert w0[0] == 1 and abs(w0[9]) < 1e-12 and w1[9] == 1 and abs(w1[0]) < 1e-12  # from the top to the bottom
    assert np.allclose(c.weights(0.5).numpy(), c.weights(0.5).numpy()[::-1])  # half-way: symmetric about the middle


def test_curriculum_draws_each_bin_in_proportion_to_its_weight_times_its_rows():
    scores = np.arange(100, dtype=np.float64)  # bins of 10 rows; row 99 is the top
    c = train_t2i.Curriculum(scores, steps=10)
    gen, n = torch.Generator().manual_seed(0), 20000
    for step in [0, 4, 9]:
        rows = c(step, n, gen)
        counts = np.bincount(c.bin[rows].numpy(), minlength=10) / n
        expected = c.weights(step / 10).numpy() / c.weights(step / 10).numpy().sum()
        assert np.all(np.abs(counts - expected) <= 5 * np.sqrt(expected * (1 - expected) / n) + 1e-12), step


def spy_rows(monkeypatch, d):
    """Record the training row of every image the loss is computed on (images must be unique among the rows used)."""
    index, seen, real_loss = {}, [], proxy.rf_loss
    for i in range(len(d["images"])):
        index.setdefault(bytes(d["images"][i].numpy()), i)  # the first row with each image

    def spy(model, x0, tokens, **kw):
        seen.append([index[bytes(((x + 1) * 127.5).round().byte().numpy())] for x in x0.cpu()])
        return real_loss(model, x0, tokens, **kw)
    monkeypatch.setattr(proxy, "rf_loss", spy)
    return seen


def test_curriculum_starts_on_the_top_rated_rows_ends_on_the_lowest_and_keeps_to_the_subset(tiny_shapes, tmp_path,
                                                                                            monkeypatch):
    d = data.load_dataset(tiny_shapes)
    seen = spy_rows(monkeypatch, d)
    distinct = np.unique([bytes(d["images"][i].numpy()) for i in range(len(d["images"]))], return_index=True)[1]
    rows = np.sort(distinct)[:200].astype(np.int64)  # the first row of each distinct image
    np.save(tmp_path / "subset.npy", rows)
    scores = np.random.default_rng(1).normal(size=len(d["images"])).astype(np.float32)
    np.save(tmp_path / "scores.npy", scores)
    rank = {int(r): k for k, r in enumerate(rows[np.argsort(-scores[rows], kind="stable")])}  # 0 = top of the subset
    train_t2i.main(["--data", tiny_shapes, "--subset", str(tmp_path / "subset.npy"), "--out", str(tmp_path / "run"),
                    "--steps", "8", *TINY, "--curriculum", str(tmp_path / "scores.npy")])
    assert len(seen) == 8 and all(r in rank for batch in seen for r in batch)  # only subset rows
    early = np.mean([rank[r] for batch in seen[:2] for r in batch])
    late = np.mean([rank[r] for batch in seen[-2:] for r in batch])
    assert early < 70 and late > 130, (early, late)  # the emphasis slides from the top bins to the bottom ones


def test_curriculum_resume_through_the_cli_gives_the_uninterrupted_runs_weights(tiny_shapes, tmp_path, monkeypatch):
    np.save(tmp_path / "scores.npy", np.random.default_rng(2).normal(size=400))
    cur = ["--curriculum", str(tmp_path / "scores.npy")]
    whole, split, plain = str(tmp_path / "whole"), str(tmp_path / "split"), str(tmp_path / "plain")
    train_t2i.main(["--data", tiny_shapes, "--out", whole, "--steps", "6", *TINY, *cur])
    real = train_t2i.Curriculum.__call__

    def killed_at_step_4(self, step, n, gen):  # the run of 6 steps dies after its checkpoint at step 3
        if step == 3:
            raise KeyboardInterrupt
        return real(self, step, n, gen)
    monkeypatch.setattr(train_t2i.Curriculum, "__call__", killed_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        train_t2i.main(["--data", tiny_shapes, "--out", split, "--steps", "6", *TINY, "--ckpt-every", "3", *cur])
    monkeypatch.setattr(train_t2i.Curriculum, "__call__", real)
    train_t2i.main(["--data", tiny_shapes, "--out", split, "--steps", "6", "--resume", *TINY, *cur])
    assert_same(weights(os.path.join(whole, "train_state.pt")), weights(os.path.join(split, "train_state.pt")))
    train_t2i.main(["--data", tiny_shapes, "--out", plain, "--steps", "6", *TINY])  # uniform batches: other weights
    a, b = weights(os.path.join(whole, "train_state.pt")), weights(os.path.join(plain, "train_state.pt"))
    assert any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("case", ["length", "online", "junk"])
def test_curriculum_bad_input_exits_2_with_one_line(tiny_shapes, tmp_path, capsys, case):
    path = tmp_path / "scores.npy"
    np.save(path, np.zeros(399 if case == "length" else 400))
    if case == "junk":
        path.write_bytes(b"not numpy")
    extra = ["--online", "hard_learner"] if case == "online" else []
    with pytest.raises(SystemExit) as e:
        train_t2i.main(["--data", tiny_shapes, "--out", str(tmp_path / "run"), *TINY, "--curriculum", str(path), *extra])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error:") and err.count("\n") == 1 and "curriculum" in err, err
    assert not (tmp_path / "run").exists()


def test_subset_files_are_validated(tmp_path):
    for rows, fragment in [([], "empty"), ([0, 0, 1], "duplicate"), ([0, 99], "outside"), ([0.5], "integer")]:
        np.save(tmp_path / "s.npy", np.array(rows))
        with pytest.raises(data.DataError, match=fragment):
            train_t2i.load_subset(str(tmp_path / "s.npy"), 10)
