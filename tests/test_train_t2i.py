"""Properties of the target training script (train_t2i.py), checked through its command line at tiny sizes."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import data
import proxy
import train_t2i
from conftest import assert_same, weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def test_torchrun_with_two_cpu_processes_matches_a_single_process_run(tiny_shapes, tmp_path):
    """Both ranks draw the same global batch and take halves; DDP averages the gradients: the result equals one
    process on the whole batch up to the order of float additions."""
    args = ["--data", tiny_shapes, "--steps", "3", *TINY]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                        os.path.join(ROOT, "train_t2i.py"), *args, "--out", str(tmp_path / "ddp")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("wrote ") == 1  # only rank 0 prints (and writes)
    train_t2i.main([*args, "--out", str(tmp_path / "one")])
    for name in ["train_state.pt", "model.pt"]:
        a, b = weights(tmp_path / "ddp" / name), weights(tmp_path / "one" / name)
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-5), (name, k)


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
