"""--resume after a kill gives the uninterrupted run's log.csv, and refuses data or settings other than the ones the
checkpoint was made with (issue 13, items 6 and 8)."""
import csv
import os
import shutil
import subprocess
import sys

import pytest
import torch

import data
import evaluate
import metagrad
import proxy
import train_t2i
from conftest import assert_same, weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--width", "16", "--depth", "1", "--batch-size", "8", "--device", "cpu", "--grid-every", "0"]

pytestmark = pytest.mark.usefixtures("one_thread")

# A process that dies like kill -9 (os._exit: no flush, no cleanup) right after writing checkpoint NAME at step AT.
KILLED = """
import os, sys
sys.path.insert(0, {root!r})
import proxy, metagrad, {script}
save = proxy.save_checkpoint
def save_then_die(path, model, step, *args, **kw):
    save(path, model, step, *args, **kw)
    if os.path.basename(path) == {name!r} and step == {at}:
        os._exit(137)
proxy.save_checkpoint = save_then_die
{script}.main({argv!r})
"""


def run_killed(script, argv, name, at):
    code = KILLED.format(root=ROOT, script=script, argv=argv, name=name, at=at)
    r = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1"),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 137, r.stderr[-3000:]


def log_without_seconds(path):
    """The log's lines with the wall-clock columns (seconds, score_seconds) emptied; the rest byte for byte."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    clock = [i for i, h in enumerate(rows[0]) if h in ("seconds", "score_seconds")]
    assert clock, rows[0]
    return [",".join("" if i in clock and n else v for i, v in enumerate(r)) for n, r in enumerate(rows)]


def test_proxy_killed_before_its_first_log_row_twice_resumes_to_the_same_log(tiny_shapes, tmp_path):
    """Killed at step 20 (nothing but the header on disk) and at step 40 (40 steps into the log's 50-step window):
    the resumed log.csv equals the uninterrupted one's but for the seconds, and so do the weights."""
    args = ["--data", tiny_shapes, "--preset", "quick", "--steps", "60", "--batch-size", "8", "--ckpt-every", "10",
            "--draws", "1", "--device", "cpu"]
    whole, split = str(tmp_path / "whole"), str(tmp_path / "split")
    proxy.main(args + ["--out", whole])
    run_killed("proxy", args + ["--out", split], "proxy.pt", 20)
    assert open(os.path.join(split, "proxy_log.csv")).read().startswith("step,loss,seconds,loss_t0.0")
    run_killed("proxy", args + ["--out", split, "--resume"], "proxy.pt", 40)
    proxy.main(args + ["--out", split, "--resume"])
    a, b = (log_without_seconds(os.path.join(r, "proxy_log.csv")) for r in (whole, split))
    assert len(a) == 1 + 2 and a == b  # rows at steps 50 and 60 (the mean of steps 11..60)
    assert_same(weights(os.path.join(whole, "proxy.pt")), weights(os.path.join(split, "proxy.pt")))


@pytest.mark.parametrize("mode", ["jest", "early_ajest"])
def test_online_run_killed_and_resumed_logs_the_same_rows_and_loss_columns(tiny_shapes, tmp_path, mode):
    """JEST scores every super-batch; early AJEST switches selection off at once here (the random reference is far
    worse than the learner), so its loss columns after the resume repeat the last scoring, which must be restored."""
    d = data.load_dataset(tiny_shapes)
    torch.manual_seed(3)
    ref = proxy.DiT(image_size=16, patch=2, width=16, depth=1, heads=4, text_depth=1, vocab_size=len(d["vocab"]),
                    max_tokens=d["tokens"].shape[1])
    for p in ref.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    proxy.save_checkpoint(str(tmp_path / "ref.pt"), ref, 0, d["vocab"])
    args = ["--data", tiny_shapes, *TINY, "--online", mode, "--reference", str(tmp_path / "ref.pt"),
            "--super-batch-factor", "2", "--steps", "60", "--ckpt-every", "10", "--ema", "0.9"]
    whole, split = str(tmp_path / "whole"), str(tmp_path / "split")
    train_t2i.main(args + ["--out", whole])
    run_killed("train_t2i", args + ["--out", split], "train_state.pt", 40)
    train_t2i.main(args + ["--out", split, "--resume"])
    a, b = (log_without_seconds(os.path.join(r, "log.csv")) for r in (whole, split))
    assert len(a) == 1 + 2 and a == b
    header = a[0].split(",")
    last = dict(zip(header, a[-1].split(",")))
    assert last["learner_loss"] and last["reference_loss"]  # measured numbers, compared above
    assert_same(weights(os.path.join(whole, "model.pt")), weights(os.path.join(split, "model.pt")))


def test_metagrad_killed_between_log_rows_resumes_to_the_same_log(tiny_shapes, tmp_path):
    """Checkpoints every 3 steps, a log row every 4: a kill after step 3 leaves three steps of the next row's
    window, which the state carries."""
    d = data.load_dataset(tiny_shapes)
    p16 = str(tmp_path / "p16.pt")
    torch.manual_seed(0)
    proxy.save_checkpoint(p16, proxy.DiT(image_size=16, patch=2, width=16, depth=1, heads=2, text_depth=1,
                                         vocab_size=len(d["vocab"]), max_tokens=d["tokens"].shape[1]), 0, d["vocab"])
    args = ["--data", tiny_shapes, "--proxy", p16, "--steps", "8", "--batch-size", "8", "--primary-warmup", "2",
            "--draws", "1", "--log-every", "4", "--ckpt-every", "3", "--device", "cpu"]
    whole, split = str(tmp_path / "whole"), str(tmp_path / "split")
    metagrad.main(args + ["--out", whole])
    code = KILLED.replace("proxy.save_checkpoint", "metagrad.save_state").replace(
        "def save_then_die(path, model, step, *args, **kw)", "def save_then_die(path, s, step, *args, **kw)").replace(
        "save(path, model, step, *args, **kw)", "save(path, s, step, *args, **kw)")
    code = code.format(root=ROOT, script="metagrad", argv=args + ["--out", split], name="metagrad_state.pt", at=3)
    r = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1"),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 137, r.stderr[-3000:]
    metagrad.main(args + ["--out", split, "--resume"])
    a, b = (log_without_seconds(os.path.join(r, "metagrad_log.csv")) for r in (whole, split))
    assert len(a) == 1 + 2 and a == b
    assert_same(weights(os.path.join(whole, "rater.pt")), weights(os.path.join(split, "rater.pt")))


# ----------------------------------------------------------------------------------------------------------------
# Resume refuses other data or settings, in one line

def refused(main, argv, capsys, *fragments):
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in err, err
    return err


@pytest.fixture(scope="module")
def other_shapes(tmp_path_factory):
    """Another 16x16 set of the same size and vocabulary as tiny_shapes (seed 1): only its rows differ."""
    d = str(tmp_path_factory.mktemp("other_shapes"))
    data.main(["--out", d, "--size", "16", "--n-train", "400", "--n-val", "40", "--n-test", "40", "--seed", "1"])
    return d


def test_proxy_resume_refuses_other_data_seed_or_batch_size(tiny_shapes, other_shapes, tmp_path, capsys):
    args = ["--preset", "quick", "--steps", "3", "--batch-size", "8", "--draws", "1",
            "--device", "cpu", "--out", str(tmp_path / "run"), "--resume"]
    proxy.main(["--data", tiny_shapes, *args])
    before = weights(str(tmp_path / "run" / "proxy.pt"))
    refused(proxy.main, ["--data", other_shapes, *args, "--steps", "6"], capsys, "proxy.pt", "data")
    refused(proxy.main, ["--data", tiny_shapes, *args, "--steps", "6", "--seed", "1"], capsys, "seed")
    refused(proxy.main, ["--data", tiny_shapes, *args, "--steps", "6", "--batch-size", "4"], capsys, "batch_size")
    assert_same(before, weights(str(tmp_path / "run" / "proxy.pt")))  # nothing trained on
    proxy.main(["--data", tiny_shapes, *args, "--steps", "6", "--lr", "5e-4"])  # the same data: --lr may change


def test_train_t2i_resume_refuses_another_subset_or_ema(tiny_shapes, tmp_path, capsys):
    import numpy as np
    np.save(tmp_path / "a.npy", np.arange(0, 400, 2))
    np.save(tmp_path / "b.npy", np.arange(1, 400, 2))  # as many rows as a.npy
    args = ["--data", tiny_shapes, *TINY, "--out", str(tmp_path / "run"), "--steps", "2"]
    train_t2i.main(args + ["--subset", str(tmp_path / "a.npy")])
    refused(train_t2i.main, args + ["--subset", str(tmp_path / "b.npy"), "--resume", "--steps", "4"], capsys, "data")
    refused(train_t2i.main, args + ["--subset", str(tmp_path / "a.npy"), "--resume", "--steps", "4", "--ema", "0.5"],
            capsys, "ema_decay")


def test_train_t2i_refuses_a_val_split_of_another_image_size(tiny_shapes, tmp_path, capsys):
    big = str(tmp_path / "big")
    data.main(["--out", big, "--size", "32", "--n-train", "20", "--n-val", "4", "--n-test", "4"])
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(os.path.join(big, "train.pt"), mixed / "train.pt")
    shutil.copy(os.path.join(tiny_shapes, "val.pt"), mixed / "val.pt")
    refused(train_t2i.main, ["--data", str(mixed), *TINY, "--out", str(tmp_path / "run"), "--steps", "2"], capsys,
            "val.pt", "image size")
    assert not (tmp_path / "run").exists()


def test_metagrad_resume_refuses_other_data_even_of_another_image_size(tiny_shapes, other_shapes, tmp_path, capsys):
    d = data.load_dataset(tiny_shapes)
    p16 = str(tmp_path / "p16.pt")
    proxy.save_checkpoint(p16, proxy.DiT(image_size=16, patch=2, width=16, depth=1, heads=2, text_depth=1,
                                         vocab_size=len(d["vocab"]), max_tokens=d["tokens"].shape[1]), 0, d["vocab"])
    out = str(tmp_path / "rate")
    args = ["--proxy", p16, "--out", out, "--steps", "2", "--batch-size", "8", "--primary-warmup", "2", "--draws", "1",
            "--device", "cpu", "--resume"]
    metagrad.main(["--data", tiny_shapes, *args])
    refused(metagrad.main, ["--data", other_shapes, *args, "--steps", "4"], capsys, "metagrad_state.pt",
            "data (train.pt")
    big = str(tmp_path / "big")  # another image size, with a proxy that fits it: the state does not
    data.main(["--out", big, "--size", "32", "--n-train", "20", "--n-val", "4", "--n-test", "4"])
    p32 = str(tmp_path / "p32.pt")
    proxy.save_checkpoint(p32, proxy.DiT(image_size=32, patch=4, width=16, depth=1, heads=2, text_depth=1,
                                         vocab_size=len(d["vocab"]), max_tokens=d["tokens"].shape[1]), 0, d["vocab"])
    refused(metagrad.main, ["--data", big, *args[2:], "--proxy", p32, "--steps", "4"], capsys, "data (train.pt")
    # --primary warmed on another data set's val split is refused too
    refused(metagrad.main, ["--data", other_shapes, "--proxy", p16, "--out", str(tmp_path / "rate2"), "--steps", "2",
                            "--batch-size", "8", "--draws", "1", "--device", "cpu",
                            "--primary", os.path.join(out, "primary_warm.pt")], capsys, "primary_warm.pt", "val.pt")


def test_evaluate_refuses_a_model_of_another_vocabulary_or_caption_length(tiny_shapes, tmp_path, capsys):
    d = data.load_dataset(tiny_shapes, "test")
    L, V = d["tokens"].shape[1], list(d["vocab"])
    config = dict(image_size=16, patch=2, width=16, depth=1, heads=2, text_depth=1, vocab_size=len(V))
    shuffled = V[:3] + V[3:][::-1]  # the same words, other ids: the same size, another vocabulary
    proxy.save_checkpoint(str(tmp_path / "vocab.pt"), proxy.DiT(**config, max_tokens=L), 0, shuffled)
    proxy.save_checkpoint(str(tmp_path / "short.pt"), proxy.DiT(**config, max_tokens=L - 5), 0, V)
    for name, fragment in [("vocab.pt", "vocabulary"), ("short.pt", "caption length")]:
        out = tmp_path / f"{name}.json"
        refused(evaluate.main, ["--data", tiny_shapes, "--model", str(tmp_path / name), "--out", str(out),
                                "--n-samples", "4", "--device", "cpu"], capsys, name, fragment)
        assert not out.exists()
