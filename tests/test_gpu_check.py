"""bench/gpu_check.sh and bench/train_speed.py without a GPU (CUDA hidden even where there is one): one line and exit 0
without CUDA, the whole script on the CPU (--cpu-smoke), a part cut by its timeout or by the budget, and the figures
and names the GPU run relies on."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

import ablate
import proxy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "gpu_check.sh")
sys.path.insert(0, os.path.join(ROOT, "bench"))
import train_speed  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def gpu_check(tmp_path, *args, **env):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", **env)
    return subprocess.run(["bash", SCRIPT, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)


def test_without_cuda_it_says_so_in_one_line_exits_0_and_writes_nothing(tmp_path):
    r = gpu_check(tmp_path)
    assert r.returncode == 0 and r.stderr == ""
    assert len(r.stdout.splitlines()) == 1 and "no CUDA device" in r.stdout
    assert os.listdir(tmp_path) == []


def test_cpu_smoke_runs_the_script_end_to_end_into_one_folder(tmp_path):
    r = gpu_check(tmp_path, "out", "--cpu-smoke", GPU_CHECK_T_A="900", GPU_CHECK_T_B="900", GPU_CHECK_BUDGET="2000")
    assert r.returncode == 0, r.stdout + r.stderr  # (generous timeouts: a shared CPU can be 10x slower than quiet)
    summary = open(tmp_path / "out" / "summary.txt").read()
    assert r.stdout.strip().endswith(summary.strip().splitlines()[-1])  # printed too
    n_gpu_tests = open(os.path.join(ROOT, "tests", "test_gpu.py")).read().count("\ndef test_")
    assert "(a) tests: passed" in summary and f"pytest0.log: {n_gpu_tests} skipped" in summary  # skipped cleanly
    assert "(b) training throughput: passed" in summary and "(c) paper grid: skipped (--cpu-smoke)" in summary
    assert len(re.findall(r"speed: proxy quick-preset .* eager: \d+ images/s", summary)) == 1
    assert len(re.findall(r"eager x2 processes: \d+ images/s together", summary)) == 1
    results = json.load(open(tmp_path / "out" / "b_speed" / "speed.json"))["results"]
    assert [r["mode"] for r in results] == ["eager", "eager x2 processes"]
    assert all(r["images_per_s"] > 0 and r["flops_per_step"] > 0 for r in results)
    assert (tmp_path / "out" / "a_tests" / "pytest0.log").exists() and (tmp_path / "out" / "b_speed" / "speed.log").exists()


@pytest.mark.parametrize("env, says", [({"GPU_CHECK_T_B": "1"}, "(b) training throughput: TIMED OUT at its 1 s"),
                                       ({"GPU_CHECK_BUDGET": "0"}, "(b) training throughput: SKIPPED (the 0 s budget")])
def test_a_part_past_its_timeout_or_the_budget_is_cut_and_the_script_goes_on(tmp_path, env, says):
    r = gpu_check(tmp_path, "out", "--cpu-smoke", "--parts", "bc", **env)
    summary = open(tmp_path / "out" / "summary.txt").read()
    assert r.returncode == 1 and says in summary
    assert "(c) paper grid: skipped" in summary and "SOME PARTS FAILED OR TIMED OUT" in summary  # the next part ran


@pytest.mark.parametrize("args", [["--parts", "ax"], ["--bogus"]])
def test_bad_flags_exit_2_with_one_line(tmp_path, args):
    r = gpu_check(tmp_path, *args)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and r.stderr.startswith("error: gpu_check.sh")


def test_the_grid_the_script_runs_is_a_cut_of_the_paper_grid_that_trains_at_once():
    methods = re.search(r"GPU_CHECK_METHODS:-([\w,]+)\}", open(SCRIPT).read()).group(1).split(",")
    paper = ablate.PRESETS["paper"]
    grid = [g for g in paper["grid"] if ablate.run_name(*g) in methods]
    assert len(grid) == len(methods)  # every name is a run of the paper grid (ablate.py would exit 2 on a typo)
    assert {scorer for scorer, _, _ in grid} - {None, "random"} == {"alchemist"}  # one rater to train, no more
    assert len(methods) <= paper["gpu_workers"]  # all of them train at once


def test_the_peak_table_matches_whole_names_and_knows_what_it_does_not_know():
    assert train_speed.peak_tflops("NVIDIA H200") == 989 and train_speed.peak_tflops("NVIDIA H100 PCIe") == 756
    assert train_speed.peak_tflops("NVIDIA H100 80GB HBM3") == 989 and train_speed.peak_tflops("NVIDIA L4") == 121
    assert train_speed.peak_tflops("NVIDIA L40S") == 362 and train_speed.peak_tflops("NVIDIA L40") is None  # not L4's
    assert train_speed.peak_tflops("NVIDIA A100-SXM4-80GB") == 312 and train_speed.peak_tflops("Tesla T4") is None


def test_tflops_and_share_of_peak_are_flops_per_step_times_steps_per_second():
    r = dict(config="target:paper", params=4e6, size=32, batch_size=64, mode="eager", images_per_s=6400.0,
             flops_per_step=1e12)  # 100 steps/s of 1 TFLOP
    line = train_speed.describe(r, "NVIDIA H200", 989)
    assert "6400 images/s (100.0 steps/s); 100.00 TFLOP/s = 10.11% of the 989 TFLOP/s bf16 peak" in line
    assert "bf16 peak unknown for Tesla T4" in train_speed.describe(r, "Tesla T4", None)


def test_a_steps_flops_count_the_backward_pass_too():
    model, _ = train_speed.build("proxy", "quick", 16)
    step = train_speed.step_flops(model, 4, 16, torch.device("cpu"))
    with train_speed.FlopCounterMode(display=False) as forward:
        with torch.no_grad():
            proxy.rf_loss(model, torch.zeros(4, 3, 16, 16), torch.randint(3, 24, (4, 20)))
    assert 2.8 < step / forward.get_total_flops() <= 3.0  # backward: about twice the forward (no grad for the image)
    assert all(p.grad is None for p in model.parameters())


def test_train_speed_refuses_an_unknown_config_in_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        train_speed.main(["--configs", "proxy:huge", "--device", "cpu"])
    assert e.value.code == 2 and "--configs" in capsys.readouterr().err


def test_train_speed_starts_nothing_past_its_budget_and_says_what_it_left(capsys):
    train_speed.main(["--configs", "proxy:quick,target:paper", "--processes", "2", "--device", "cpu", "--budget", "-1",
                      "--batch-size", "1", "--steps", "1", "--warmup", "1"])  # tiny, should the budget not hold
    out = capsys.readouterr().out
    assert "not measured: proxy:quick eager, target:paper eager, proxy:quick eager x2" in out and "speed:" not in out


def test_one_failed_measurement_is_reported_and_the_others_still_run(monkeypatch, capsys):
    def measure(config, a, compiled=False, barrier=None):
        if config == "proxy:quick":
            raise RuntimeError("no compiler\nmore")
        return dict(config=config, params=4e6, size=32, batch_size=64, mode="eager", images_per_s=640.0,
                    flops_per_step=1e9)
    monkeypatch.setattr(train_speed, "measure", measure)
    with pytest.raises(SystemExit) as e:
        train_speed.main(["--configs", "proxy:quick,target:paper", "--device", "cpu"])
    out = capsys.readouterr().out
    assert e.value.code == 1 and "failed: proxy:quick eager: RuntimeError: no compiler\n" in out
    assert "speed: target paper-preset 4.00M params, 32x32, batch 64, eager: 640 images/s" in out
