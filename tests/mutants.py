"""tests/mutants.py -- does the test suite catch a wrong method? Apply known mistakes one at a time and see.

Run:     python tests/mutants.py [--only NAME ...] [--list]          (a few minutes on one CPU thread)
Not part of the default test run (pytest collects test_*.py only, and nothing here is named test_*).

Each mutant below is one deliberate mistake in the method: a file, an exact piece of its text, what replaces it, and
the tests that must catch it. The tool copies the repository's files (git's tracked and untracked-but-not-ignored
files, as they are in the working tree) to a temporary folder, runs every named test there once unchanged (they
must pass), then for each mutant writes the mistake into the copy, runs its tests (pytest -x -q, OMP_NUM_THREADS=1)
and restores the file. A mutant is killed when its tests fail, and survives when they pass: then the suite cannot
tell the method from the mistake. The working tree itself is never written to.

Exit status: 0 every mutant killed; 1 one survived (or the unchanged copy failed its tests); 2 the list is out of
date (a mutant's original text is gone or no longer unique: the code moved, update the list) or bad flags.
Maintenance: when a test is renamed or code is reworded, update the entry; when a new equation gets a test, add
its mistake here.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mutant(name, why, file, old, new, *tests):
    """One mistake: `old` (exact, unique in `file`) becomes `new`; `tests` are pytest node ids under tests/."""
    return dict(name=name, why=why, file=file, old=old, new=new, tests=["tests/" + t for t in tests])


MUTANTS = [
    # --- the ten of issue 12: each survived the suite before its test was written ------------------------------
    mutant("gap_sign", "Eq. 6's loss gap with its sign flipped", "metagrad.py",
           "signal = (loss_i - loss_ref_i).detach()", "signal = (loss_ref_i - loss_i).detach()",
           "test_metagrad.py::test_the_signal_is_the_loss_gap_on_the_batchs_own_draws_before_either_model_moves",
           "test_metagrad.py::test_a_reference_worse_on_chosen_rows_makes_the_rater_raise_those_rows_logits"),
    mutant("gap_other_draws", "the reference scored on other (t, noise) than the primary", "metagrad.py",
           'proxy.rf_loss(s["reference"], b["x"], b["tok"], b["t"], b["noise"])',
           'proxy.rf_loss(s["reference"], b["x"], b["tok"], b["t_val"], b["noise_val"])',
           "test_metagrad.py::test_the_signal_is_the_loss_gap_on_the_batchs_own_draws_before_either_model_moves"),
    mutant("reference_frozen", "Eq. 4 dropped: the reference never trains in the meta loop", "metagrad.py",
           'update(s["opt_ref"], loss_ref_i.mean(), list(s["reference"].parameters()), MODEL_CLIP)', "pass",
           "test_metagrad.py::test_eq4_the_reference_takes_a_plain_step_on_the_batch_in_alchemist_and_none_in_the_others"),
    mutant("eq5_unweighted", "Eq. 5's primary step ignores the rater's weights", "metagrad.py",
           "(1 - gamma) * (W.detach() * loss_i).sum()", "(1 - gamma) * loss_i.mean()",
           "test_metagrad.py::test_eq5_the_primary_steps_on_the_weighted_rows_and_the_validation_batch_in_the_share_gamma"),
    mutant("exact_uphill", "the exact method's virtual step goes uphill, theta + eta g", "metagrad.py",
           "theta_new = {n: p - eta * g", "theta_new = {n: p + eta * g",
           "test_metagrad.py::test_exact_signal_is_minus_eta_grad_val_after_the_step_dot_grad_row_and_a_step_against_it_lowers_val"),
    mutant("no_baseline", "the REINFORCE baseline dropped from rater_objective", "metagrad.py",
           'alchemist_rater_loss(W, signal, s["baseline"])', "alchemist_rater_loss(W, signal, 0.0)",
           "test_metagrad.py::test_rater_objective_is_the_scaled_signal_minus_the_running_baseline_plus_the_logit_prior"),
    mutant("group_mean_only", "the group head reads the batch mean only, not the variance", "rater.py",
           "torch.cat([e.mean(0), e.var(0, unbiased=False)])", "torch.cat([e.mean(0), 0 * e.mean(0)])",
           "test_rater.py::test_the_group_head_reads_the_mean_and_the_variance_of_the_batch"),
    mutant("score_minus_group", "the ranking score subtracts the group term", "rater.py",
           "    return z + group", "    return z - group",
           "test_rater.py::test_score_rows_is_z_plus_the_mean_z_group_of_each_rows_batches_recomputed_by_hand"),
    mutant("online_first_rows", "the online trainer ignores the selection and trains on the first rows", "proxy.py",
           "idx, t, noise, tok = idx[keep], t[keep], noise[keep], tok[keep]",
           "idx, t, noise, tok = idx[:len(keep)], t[:len(keep)], noise[:len(keep)], tok[:len(keep)]",
           "test_proxy.py::test_the_selection_hook_decides_the_rows_trained_on_with_the_draws_they_were_scored_on"),
    mutant("fid_cov_over_n", "FID's covariances normalised by N instead of N - 1", "evaluate.py",
           "xc.T @ xc / (len(x) - 1)", "xc.T @ xc / len(x)",
           "test_evaluate.py::test_fid_uses_each_sets_unbiased_covariance_as_numpy_computes_it"),
    # --- more mistakes in the rating stage -----------------------------------------------------------------------
    mutant("baseline_sign", "the baseline added instead of subtracted", "metagrad.py",
           "(W * (signal - baseline)).sum()", "(W * (signal + baseline)).sum()",
           "test_metagrad.py::test_baseline_leaves_the_instance_gradient_unchanged_and_flips_W_batch_gradient",
           "test_metagrad.py::test_rater_objective_is_the_scaled_signal_minus_the_running_baseline_plus_the_logit_prior"),
    mutant("no_signal_scale", "the signal not divided by its running scale s_k", "metagrad.py",
           'signal = signal / max(s["scale"], 1e-12)', "signal = signal",
           "test_metagrad.py::test_rater_objective_is_the_scaled_signal_minus_the_running_baseline_plus_the_logit_prior"),
    mutant("no_group_prior", "the logit prior forgets z_group", "metagrad.py",
           "penalty + z_group.pow(2) if", "penalty if",
           "test_metagrad.py::test_rater_objective_is_the_scaled_signal_minus_the_running_baseline_plus_the_logit_prior"),
    mutant("simplified_sign", "Eq. 9's signal with its sign flipped", "metagrad.py",
           "signal = loss_i.detach()  # Eq. 9", "signal = -loss_i.detach()  # Eq. 9",
           "test_metagrad.py::test_the_signal_is_the_loss_gap_on_the_batchs_own_draws_before_either_model_moves"),
    mutant("reference_weighted", "Eq. 4's reference trained on the rater-weighted loss", "metagrad.py",
           'update(s["opt_ref"], loss_ref_i.mean(),', 'update(s["opt_ref"], (W.detach() * loss_ref_i).sum(),',
           "test_metagrad.py::test_eq4_the_reference_takes_a_plain_step_on_the_batch_in_alchemist_and_none_in_the_others"),
    mutant("eq5_gamma_swapped", "Eq. 5 with gamma and 1 - gamma swapped", "metagrad.py",
           "gamma * loss_val + (1 - gamma) * (W.detach() * loss_i).sum()",
           "(1 - gamma) * loss_val + gamma * (W.detach() * loss_i).sum()",
           "test_metagrad.py::test_eq5_the_primary_steps_on_the_weighted_rows_and_the_validation_batch_in_the_share_gamma"),
    mutant("exact_step_doubled", "the exact method's virtual step twice as long, theta - 2 eta g", "metagrad.py",
           "theta_new = {n: p - eta * g", "theta_new = {n: p - 2 * eta * g",
           "test_metagrad.py::test_exact_signal_is_minus_eta_grad_val_after_the_step_dot_grad_row_and_a_step_against_it_lowers_val"),
    mutant("softmax_times_tau", "Eq. 7's temperature multiplies instead of divides", "rater.py",
           "torch.softmax(torch.sigmoid(z) / self.temperature, dim=0)",
           "torch.softmax(torch.sigmoid(z) * self.temperature, dim=0)",
           "test_rater.py::test_without_the_group_head_W_batch_is_one_and_W_is_the_instance_softmax"),
    # --- pruning, the model, the sampler --------------------------------------------------------------------------
    mutant("shift_keeps_top", "Shift-Gsample does not discard the top", "prune.py",
           "first = int(round(discard_top / 100 * n))", "first = 0",
           "test_prune.py::test_shift_gsample_never_takes_from_discarded_top"),
    mutant("gaussian_sign", "Eq. 11's Gaussian with the wrong sign (pushes away from mu)", "prune.py",
           "log_w = -(q - mu) ** 2 / (2 * sigma ** 2)", "log_w = (q - mu) ** 2 / (2 * sigma ** 2)",
           "test_prune.py::test_shift_gsample_keeps_rows_around_mu"),
    mutant("ranking_reversed", "the ranking runs from the worst-rated row", "prune.py",
           'np.argsort(-scores, kind="stable")', 'np.argsort(scores, kind="stable")',
           "test_prune.py::test_top_k_is_exactly_the_top_and_bottom_k_exactly_the_bottom"),
    mutant("rf_target", "the rectified-flow target x0 - eps instead of eps - x0", "proxy.py",
           "(v.to(x0.dtype) - (noise - x0))", "(v.to(x0.dtype) - (x0 - noise))",
           "test_proxy.py::test_rf_loss_is_zero_for_the_true_velocity_and_the_squared_target_for_a_zero_prediction"),
    mutant("cfg_direction", "CFG extrapolates towards the null caption", "proxy.py",
           "return v_null + cfg * (v_text - v_null)", "return v_text + cfg * (v_null - v_text)",
           "test_proxy.py::test_cfg_extrapolates_from_the_null_captions_velocity_towards_the_captions"),
    mutant("euler_direction", "the sampler steps towards t = 1", "proxy.py",
           "x = x - v / steps", "x = x + v / steps",
           "test_proxy.py::test_sampler_is_deterministic_in_range_and_cfg_one_is_the_conditional_model"),
    mutant("autoguidance_swapped", "autoguidance extrapolates from the main model towards the guide", "proxy.py",
           "v = velocity(guide, x, t).float().lerp(v.float(), guidance)",
           "v = v.float().lerp(velocity(guide, x, t).float(), guidance)",
           "test_online.py::test_autoguidance_is_the_guides_prediction_extrapolated_towards_the_main_models"),
    mutant("no_caption_drop", "training never replaces a caption by the null caption (no CFG to sample with)",
           "proxy.py", "drop = torch.rand(n, generator=gen) < CFG_DROP", "drop = torch.rand(n, generator=gen) < 0.0",
           "test_proxy.py::test_training_replaces_a_tenth_of_the_captions_by_the_null_caption"),
    mutant("resume_fresh_ema", "--resume restarts the EMA from the resumed weights", "proxy.py",
           "self.ema[k].copy_(v)", "self.ema[k].copy_(self.model.state_dict()[k])",
           "test_proxy.py::test_resumed_training_ends_with_the_uninterrupted_runs_weights"),
    # --- online selection ---------------------------------------------------------------------------------------
    mutant("learnability_sign", "learnability = reference loss - learner loss", "train_t2i.py",
           "return learner_loss - reference_loss, learner_loss", "return reference_loss - learner_loss, learner_loss",
           "test_online.py::test_online_selection_at_temperature_zero_keeps_the_rows_of_highest_learnability",
           "test_toy2d.py::test_a_jest_step_trains_on_the_super_batch_points_of_highest_learnability_with_the_draws_they_were_scored_on"),
    mutant("hook_keeps_first_rows", "OnlineSelection returns the first rows whatever the scores", "train_t2i.py",
           "keep = (jest_select(score.float().cpu(), self.batch_size, self.chunks, self.temperature, gen)",
           "keep = (torch.arange(self.batch_size)",
           "test_online.py::test_online_selection_at_temperature_zero_keeps_the_rows_of_highest_learnability"),
    mutant("jest_times_tau", "JEST's softmax multiplies by the temperature", "train_t2i.py",
           "z = score.double() / temperature if", "z = score.double() * temperature if",
           "test_online.py::test_jest_select_samples_rows_in_proportion_to_the_softmax_of_score_over_temperature"),
    mutant("jest_select_low", "JEST's sampler prefers low scores", "train_t2i.py",
           "z = score.double() / temperature if", "z = -score.double() / temperature if",
           "test_online.py::test_jest_select_returns_distinct_rows_of_the_super_batch_deterministically_for_a_seed",
           "test_toy2d.py::test_selection_prefers_high_scores_more_at_low_temperature"),
    mutant("ajest_switch", "AJEST switches when the learner is worse than the reference", "train_t2i.py",
           "if self.watching and learner_mean < reference_mean:", "if self.watching and learner_mean > reference_mean:",
           "test_online.py::test_early_ajest_switches_off_exactly_when_the_learner_first_beats_the_reference_and_never_back_on"),
    mutant("early_ajest_scores_on", "early AJEST goes on scoring super-batches after its switch", "train_t2i.py",
           "return self.on or self.watching", 'return self.on or self.watching or self.mode == "early_ajest"',
           "test_online.py::test_early_ajest_switches_off_exactly_when_the_learner_first_beats_the_reference_and_never_back_on"),
    mutant("toy_learnability_sign", "toy2d scores with learner and reference swapped (the sign flipped)", "toy2d.py",
           "train_t2i.learnability(point_loss, model, reference,", "train_t2i.learnability(point_loss, reference, model,",
           "test_toy2d.py::test_a_jest_step_trains_on_the_super_batch_points_of_highest_learnability_with_the_draws_they_were_scored_on"),
    mutant("toy_select_low", "toy2d's selection prefers low scores", "toy2d.py",
           "train_t2i.jest_select(s.cpu(),", "train_t2i.jest_select(-s.cpu(),",
           "test_toy2d.py::test_a_jest_step_trains_on_the_super_batch_points_of_highest_learnability_with_the_draws_they_were_scored_on"),
    # --- evaluation ---------------------------------------------------------------------------------------------
    mutant("kid_diagonal", "KID keeps the diagonal k(x_i, x_i) (the biased MMD)", "evaluate.py",
           "kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)", "kxx.sum() + kyy.sum()",
           "test_evaluate.py::test_kid_of_whole_sets_is_the_unbiased_mmd_counted_pair_by_pair"),
    mutant("fid_cross_term_sign", "FID adds the cross term", "evaluate.py",
           "np.trace(sigma2) - 2 * tr_sqrt", "np.trace(sigma2) + 2 * tr_sqrt",
           "test_evaluate.py::test_fid_of_a_set_with_itself_is_zero"),
    # --- the grid's verdicts --------------------------------------------------------------------------------------
    mutant("claims_ignore_spread", "a claim ignores the measured cross-machine spread (seed std alone)", "ablate.py",
           "2 * max(sa, sb, SPREAD[key])", "2 * max(sa, sb)",
           "test_ablate.py::test_claims_hold_only_where_the_difference_exceeds_twice_the_larger_seed_std_or_the_spread"),
    mutant("claims_one_std", "a claim counts a difference of one seed std", "ablate.py",
           "2 * max(sa, sb, SPREAD[key])", "max(sa, sb, SPREAD[key])",
           "test_ablate.py::test_claims_hold_only_where_the_difference_exceeds_twice_the_larger_seed_std_or_the_spread"),
]


def fail(message):
    """The list or the flags are wrong: one line on stderr, exit 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def repository_files():
    """Tracked and untracked-but-not-ignored files of the checkout, relative paths (so new tests count too)."""
    try:
        out = subprocess.run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, check=True).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        fail(f"{ROOT} is not a git checkout: mutants.py copies the files git lists")
    return [f for f in out.split("\0") if f and os.path.isfile(os.path.join(ROOT, f))]


def check_list(mutants):
    """Every mutant's text occurs exactly once in its file, and no two mutants share a name."""
    names = [m["name"] for m in mutants]
    if len(set(names)) != len(names):
        fail("tests/mutants.py: two mutants share a name")
    for m in mutants:
        path = os.path.join(ROOT, m["file"])
        text = open(path).read() if os.path.isfile(path) else ""
        if text.count(m["old"]) != 1:
            found = "not found" if m["old"] not in text else f"found {text.count(m['old'])} times"
            fail(f"mutant {m['name']}: its original text is {found} in {m['file']}; the code moved: "
                     f"update tests/mutants.py")


def run_tests(copy_root, tests, timeout=600):
    """pytest -x -q on the node ids inside the copy; (exit code, seconds, last lines of the output)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    tic = time.time()
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                           cwd=copy_root, env=env, capture_output=True, text=True, timeout=timeout)
        code, out = r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired:
        code, out = -1, f"timed out after {timeout} s"
    return code, time.time() - tic, out.strip()


def caught_by(out):
    """The first failing test and the type of its error, from pytest's output: 'test_x (AssertionError)'."""
    test = next((line.split()[1] for line in out.splitlines() if line.startswith(("FAILED ", "ERROR "))), "?")
    errors = re.findall(r"^\S+\.py:\d+: (\w+)$", out, flags=re.M)  # the last frame of each traceback
    return f"{test.split('::')[-1]} ({errors[0] if errors else 'no traceback'})"


def copy_repository():
    """A temporary folder holding the checkout's files (repository_files), the working tree's versions of them."""
    copy_root = tempfile.mkdtemp(prefix="mutants-")
    for f in repository_files():
        os.makedirs(os.path.dirname(os.path.join(copy_root, f)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, f), os.path.join(copy_root, f))
    return copy_root


def run_mutant(copy_root, m):
    """Write the mistake into the copy, run its tests, restore the file: (exit code, seconds, pytest's output)."""
    path = os.path.join(copy_root, m["file"])
    original = open(path).read()
    with open(path, "w") as f:
        f.write(original.replace(m["old"], m["new"]))
    try:
        return run_tests(copy_root, m["tests"])
    finally:
        with open(path, "w") as f:
            f.write(original)


def main(argv=None):
    p = argparse.ArgumentParser(description="Apply known mistakes to a copy of the repository one at a time and "
                                            "report which ones the tests fail to catch.")
    p.add_argument("--only", action="append", metavar="NAME", help="run only this mutant (repeat for several)")
    p.add_argument("--list", action="store_true", help="list the mutants and their tests, run nothing")
    a = p.parse_args(argv)
    unknown = sorted(set(a.only or []) - {m["name"] for m in MUTANTS})
    if unknown:
        fail(f"--only {', '.join(unknown)}: no such mutant; see --list")
    mutants = [m for m in MUTANTS if not a.only or m["name"] in a.only]
    if a.list:
        for m in mutants:
            print(f"{m['name']:22} {m['file']:12} {m['why']}\n{'':35}{' '.join(m['tests'])}")
        return 0
    check_list(mutants)
    started, copy_root = time.time(), copy_repository()
    try:
        tests = sorted({t for m in mutants for t in m["tests"]})
        code, secs, out = run_tests(copy_root, tests)  # the unchanged copy must pass, or "killed" means nothing
        if code in (4, 5):  # pytest's usage error / nothing collected: a named test is gone
            fail(f"a test named in tests/mutants.py does not exist ({out.splitlines()[-1]}); update the list")
        if code != 0:
            print(f"the unchanged copy fails its tests (exit {code}, {secs:.0f} s): fix them first\n"
                  + "\n".join(out.splitlines()[-5:]))
            return 1
        print(f"unchanged copy: {len(tests)} tests pass ({secs:.0f} s)", flush=True)
        survived = []
        for m in mutants:
            code, secs, out = run_mutant(copy_root, m)
            if code == 0:
                survived.append(m["name"])
            print(f"{'killed' if code else 'SURVIVED':8} {m['name']:22} {m['file']:12} {secs:5.1f} s  {m['why']}"
                  + (f"\n{'':9}by {caught_by(out)}" if code else ""), flush=True)
        print(f"{len(mutants) - len(survived)} of {len(mutants)} mutants killed, {len(survived)} survived"
              + (f" ({', '.join(survived)})" if survived else "") + f"; {time.time() - started:.0f} s")
        return 1 if survived else 0
    finally:
        shutil.rmtree(copy_root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
