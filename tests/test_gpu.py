"""The GPU path on a CUDA device: --device cuda through the scripts, bf16 autocast, the exact method's double backward,
--compile, and ablate.py's workers sharing one GPU. Skipped where no CUDA device is visible (no other test needs one);
bench/gpu_check.sh runs them on a GPU."""
import copy
import csv
import os

import pytest
import torch

import ablate
import data
import metagrad
import proxy
import train_t2i
from conftest import weights
from test_metagrad import batch, tiny_proxy

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (bench/gpu_check.sh)"),
              pytest.mark.usefixtures("one_thread")]
TINY = ["--width", "32", "--depth", "1", "--batch-size", "8", "--grid-every", "0", "--seed", "3"]


def last_loss(run):
    return float(list(csv.DictReader(open(os.path.join(run, "log.csv"))))[-1]["loss"])


def test_train_t2i_on_cuda_sees_the_cpu_runs_draws_and_repeats_itself(tiny_shapes, tmp_path):
    for name, device in [("cpu", "cpu"), ("cuda", "cuda"), ("again", "cuda")]:
        train_t2i.main(["--data", tiny_shapes, "--out", str(tmp_path / name), "--steps", "6", "--device", device, *TINY])
    cpu, cuda = last_loss(tmp_path / "cpu"), last_loss(tmp_path / "cuda")
    assert abs(cuda - cpu) < 0.02 * cpu, (cuda, cpu)  # the same batches, t and noise (a CPU generator); bf16 vs fp32
    first, again = weights(tmp_path / "cuda" / "model.pt"), weights(tmp_path / "again" / "model.pt")
    for k in first:  # same seed, same device: the same weights (up to the order of atomic adds in a few kernels)
        assert torch.allclose(first[k], again[k], rtol=0, atol=1e-6), k
    model, _ = proxy.load_proxy(str(tmp_path / "cuda" / "model.pt"), "cpu", dataset=data.load_dataset(tiny_shapes))
    assert next(model.parameters()).device.type == "cpu"  # a checkpoint written on CUDA loads on the CPU


def test_training_on_cuda_runs_the_model_in_bf16_and_keeps_the_loss_in_float32(tiny_shapes, tmp_path):
    d = data.load_dataset(tiny_shapes)
    model = tiny_proxy(len(d["vocab"]), nudge=0.05).cuda()  # nudged: the zero-initialised output says something
    dtypes = []
    model.blocks[0].mlp.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    proxy.train(model, d["images"][:64], d["tokens"][:64], 2, 8, 1e-3, 0, torch.device("cuda"),
                proxy.Run(str(tmp_path / "state.pt"), d["vocab"]))
    assert dtypes and set(dtypes) == {torch.bfloat16}  # proxy.train's autocast is on
    x0, tok = data.to_float(d["images"][:16]).cuda(), d["tokens"][:16].cuda()
    t, noise = torch.rand(16).cuda(), torch.randn(16, 3, 16, 16).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        low = proxy.rf_loss(model, x0, tok, t=t, noise=noise)
    full = proxy.rf_loss(model, x0, tok, t=t, noise=noise)
    assert low.dtype == torch.float32 and not torch.equal(low, full)  # bf16 products, a float32 loss
    assert torch.allclose(low, full, rtol=3e-2, atol=1e-4)


def test_the_exact_methods_double_backward_on_cuda_equals_the_cpus_in_float64(tiny_shapes):
    d = data.load_dataset(tiny_shapes)
    primary, b = tiny_proxy(len(d["vocab"]), nudge=0.05).double(), batch(d)
    W = torch.tensor([0.3, 0.1, 0.4, 0.2], dtype=torch.float64)
    on_cpu = metagrad.exact_signal(primary, W, 0.5, **b)  # matches finite differences (test_metagrad.py)
    on_cuda = metagrad.exact_signal(copy.deepcopy(primary).cuda(), W.cuda(), 0.5, **{k: v.cuda() for k, v in b.items()})
    assert on_cuda.device.type == "cuda" and on_cpu.abs().max() > 1e-8
    assert torch.allclose(on_cuda.cpu(), on_cpu, rtol=1e-8, atol=1e-12)


def test_compile_on_cuda_trains_like_eager_and_writes_plain_checkpoints(tiny_shapes, tmp_path):
    for name, extra in [("eager", []), ("compiled", ["--compile"])]:
        train_t2i.main(["--data", tiny_shapes, "--out", str(tmp_path / name), "--steps", "6", "--device", "cuda",
                        *TINY, *extra])
    eager, compiled = last_loss(tmp_path / "eager"), last_loss(tmp_path / "compiled")
    assert abs(compiled - eager) < 0.02 * eager, (compiled, eager)
    state = weights(tmp_path / "compiled" / "train_state.pt")
    assert not any("_orig_mod" in k for k in state)  # the state_dict keeps its plain names
    proxy.load_proxy(str(tmp_path / "compiled" / "model.pt"), dataset=data.load_dataset(tiny_shapes))


def test_ablate_trains_gpu_workers_runs_at_once_on_the_gpu_with_every_stage_on_cuda(tmp_path, monkeypatch, capsys):
    grid = [(None, None, 1.0), ("random", "random", 0.5), ("exact", "shift_gsample", 0.5), ("loss", "top_k", 0.2)]
    monkeypatch.setitem(ablate.PRESETS, "tiny", dict(ablate.PRESETS["tiny"], grid=grid, gpu_workers=2))
    runs = tmp_path / "runs"
    ablate.main(["--preset", "tiny", "--seeds", "1", "--runs", str(runs), "--out", str(tmp_path / "results"),
                 "--device", "cuda"])
    assert "4 training runs (4 methods x 1 seeds), 2 at a time" in capsys.readouterr().out  # the preset's gpu_workers
    rows = list(csv.DictReader(open(tmp_path / "results" / "results.csv")))
    assert len(rows) == 4 and all(float(r["fid"]) >= 0 for r in rows)
    for run in os.listdir(runs / "train"):  # each worker trained on the GPU (train_t2i.py prints its device)
        assert " on cuda" in open(runs / "train" / run / "run.log").read(), run
    assert (runs / "rate_exact" / "rater.pt").exists() and (runs / "scores" / "loss.npy").exists()
