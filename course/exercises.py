"""course/exercises.py -- the course's one table: what each exercise blanks, teaches, grades and should show.

make.py (the starter code), grade.py (the grader), make_snapshots.py and the generated part of course/README.md all
read this table and nothing else, so a renamed function is one edited line here. Fields of an exercise:
  number, title, hours, points   as the README shows them
  needs     earlier exercises whose functions this one's tests (and closing commands) call: do those first
  goal      the learning goal, one paragraph
  blank     (file, function or Class.method, one-line task): make.py replaces each body by
            raise NotImplementedError("exercise N: <name>: <task>") and keeps the signature and the docstring
  equations (paper equation, what it says), with the paper's numbers where it has them
  hints     short, in the order a student needs them
  tests     the graded test file under course/tests/; the README lists its tests' docstrings as graded properties
  see       (commands, what you should see): run from the root of your copy once the exercise passes; the figures
            were measured with the reference, on one CPU thread (README: where and how)
"""

SETUP = "python data.py --out runs/course/shapes --size 16 --max-objects 1 --n-train 2000 --n-val 300 --n-test 300"

EXERCISES = [
    dict(
        number=1, title="Rectified flow: the loss and the guided Euler sampler", hours=2, points=10, needs=[],
        goal="Write the training loss of a text-to-image rectified-flow model and its sampler, with classifier-free "
             "guidance and autoguidance. Every later stage measures data through this loss, and every picture comes "
             "from this sampler.",
        blank=[("proxy.py", "rf_loss", "the per-sample rectified-flow loss on given or fresh (t, noise) draws"),
               ("proxy.py", "sample_images", "Euler from t=1 to t=0 with classifier-free guidance and autoguidance")],
        equations=[("rectified flow", "x_t = (1 - t) x0 + t eps, t ~ U(0, 1); the model predicts v = eps - x0; "
                    "L = mean over pixels of (v_theta(x_t, t, c) - (eps - x0))^2, per sample"),
                   ("Euler", "x <- x - v(x, t) / steps at t = 1, 1 - 1/steps, ..., 1/steps"),
                   ("classifier-free guidance", "v = v_null + cfg (v_text - v_null)"),
                   ("autoguidance (Karras et al. 2024)", "D_w = w D_main + (1 - w) D_guide; D = x_t - t v is affine "
                    "in v, so the same mix of velocities")],
        hints=["Read the banner above rf_loss: which end of t is noise?",
               "Fresh draws come from `generator` on the CPU in the order the docstring gives; the tests check it.",
               "The model is any callable model(x_t, t, tokens) -> v; do not call .item() or detach: the loss must "
               "stay differentiable in the model's weights.",
               "In the sampler, apply CFG inside each model first, then mix main and guide (torch.lerp does it).",
               "data.null_tokens(B, L) is the null caption; proxy.train (given) puts it in place of 10% of the "
               "captions (CFG_DROP) before calling your loss: that is how the model learns v_null."],
        tests="test_ex1_flow.py",
        see=([SETUP, "python proxy.py --data runs/course/shapes --out runs/course/proxy --preset quick --steps 300"],
             "about 1 min. proxy_report.json: val_loss 0.08-0.11 (reference, seeds 0 and 1: 0.089, 0.097); "
             "loss_noise 7-10x loss_clean; misaligned_over_clean 1.05-1.4 (reference: 1.22, 1.10): after 300 "
             "steps the model begins to read the caption. proxy_log.csv: the loss falls from 1.1 (the first 50 "
             "steps) to 0.17; proxy_samples.png: coloured blobs at the captions' places, above the real images."),
    ),
    dict(
        number=2, title="Shift-Gsample and exact sampling without replacement", hours=1.5, points=10, needs=[],
        goal="Turn a ranking into a training subset as Alchemist does: drop the top, then sample the rest around a "
             "chosen percentile without replacement, exactly and in one pass (Gumbel top-k).",
        blank=[("prune.py", "gumbel_top_k", "count distinct indices drawn without replacement, p ~ exp(log_w)"),
               ("prune.py", "shift_gsample", "Eq. 11: discard the top, then Gaussian-weighted sampling by percentile")],
        equations=[("Eq. 11", "drop the top n% of the ranking; sample the rest without replacement with "
                    "p(i) ~ exp(-(q_i - mu)^2 / (2 sigma^2)), q_i the rank percentile (0 = best-rated)"),
                   ("Gumbel top-k (Vieira 2014; Kool et al. 2019)", "the top k of log w_i + G_i, G_i ~ Gumbel(0, 1), "
                    "are k sequential draws without replacement with p_i = w_i / sum w")],
        hints=["First pick of two items with weights w: P(1) = w_1 / (w_1 + w_2). Check your sampler by counting.",
               "Stay in log space: exp(-(q - mu)^2 / 2 sigma^2) underflows to 0 far in the tail.",
               "ranking(), as_subset() and check_pool() are given; np.argpartition finds the top k in O(N).",
               "Percentiles: the row of rank r of N sits at q = 100 (r + 1/2) / N."],
        tests="test_ex2_selection.py",
        see=([SETUP, "python prune.py --data runs/course/shapes --scorer clarity --out runs/course/clarity.npy",
              "python prune.py --scores runs/course/clarity.npy --strategy shift_gsample --keep 0.5 "
              "--data runs/course/shapes --out runs/course/shift50.npy"],
             "seconds. Kept 1000 of 2000 rows from percentile 25.0 on, the middle 80% of them in 30-70, mean 50.1. "
             "Keep rates: noise 0% and watermark 0% (clarity rates them sharpest: the discarded top), blur 0% (rated "
             "bluntest: the bottom tail, out of the Gaussian's reach), clean 62-66%, misaligned 55-61% and "
             "duplicates 53-58% (pixels cannot see a wrong caption); the same with --seed 1 and 2 to within a row "
             "or two. shift50.png shows the kept rows per defect type."),
    ),
    dict(
        number=3, title="The Alchemist meta step: Eq. 4-6 with a baseline, the Eq. 7/8 weights", hours=3, points=15,
        needs=[1],
        goal="Learn a rating by meta-gradients: the rater weights each training row, the primary model learns from "
             "the weighted rows, and the rater moves towards rows on which the primary does better than a reference "
             "trained on everything. See why the paper's Eq. 6 needs a baseline to keep W_batch alive.",
        blank=[("rater.py", "Rater.instance_weights", "Eq. 7: softmax over the batch of sigmoid(z) / tau"),
               ("rater.py", "Rater.forward", "Eq. 8: W_i = w_inst_i * W_batch, with z and W_batch"),
               ("metagrad.py", "alchemist_rater_loss", "Eq. 6 with a baseline: sum_i W_i (h_i - b)"),
               ("metagrad.py", "rater_objective", "the scaled signal, the running scale and baseline, the logit prior"),
               ("metagrad.py", "meta_step", "one meta step: the signal, then the rater, primary and reference steps")],
        equations=[("Eq. 4", "theta_ref <- step on mean_i L(theta_ref; x_i): the reference learns from everything"),
                   ("Eq. 5", "theta <- step on gamma L_val(theta) + (1 - gamma) sum_i W_i L(theta; x_i), W detached"),
                   ("Eq. 6", "mu <- step on sum_i W_i(mu) (h_i - b), h_i = L(theta; x_i) - L(theta_ref; x_i) "
                    "on the same (t, noise), detached; b the REINFORCE baseline (our deviation)"),
                   ("Eq. 7", "w_inst_i = softmax_i(sigmoid(z_i) / tau)"),
                   ("Eq. 8", "W_i = w_inst_i * W_batch, W_batch = sigmoid(z_group), the group head's logit"),
                   ("Eq. 9", "--simplified: h_i = L(theta; x_i), no reference")],
        hints=["The signal is computed once, before any model moves, from both models on the batch's own draws.",
               "metagrad.update(opt, loss, params, clip) is given: it steps only `params`.",
               "Why the baseline leaves the instance head alone: sum_i w_inst_i = 1, so sum_i grad w_inst_i = 0.",
               "Order inside meta_step: weights, losses, signal, rater objective, finiteness check, then the three "
               "updates, then b_{k+1}."],
        tests="test_ex3_meta_step.py",
        see=([SETUP, "python proxy.py --data runs/course/shapes --out runs/course/proxy --preset quick --steps 300",
              "python metagrad.py --data runs/course/shapes --proxy runs/course/proxy/proxy.pt --out runs/course/rate "
              "--primary-warmup 200 --steps 100"],
             "about 2 min (after exercise 1's proxy). The last line: final AUROC (rater logit z, clean vs type) "
             "misaligned 0.80-0.95 (reference, --seed 0 and 1: 0.861, 0.910), noise 1.000, watermark 0.80-0.95 "
             "(0.872, 0.847), blur 0.6-0.7, duplicates 0.45-0.7 (both models fit them: the gap is small). "
             "metagrad_log.csv: W_batch stays inside 0.45-0.6 (0.50-0.53), neither collapsing nor saturating."),
    ),
    dict(
        number=4, title="The exact one-step hypergradient through a virtual step", hours=2, points=10, needs=[1, 3],
        goal="Differentiate the validation loss through a virtual SGD step with respect to each row's weight "
             "(Learning-to-Reweight, DataRater), check it against finite differences in float64, and explain why "
             "this exact signal misses wrong captions on this data while Eq. 6's gap finds them.",
        blank=[("metagrad.py", "exact_rater_loss", "L_val after the virtual step theta - eta sum_i W_i grad L_i"),
               ("metagrad.py", "exact_signal", "h_i = d L_val(theta'(W)) / d W_i, detached")],
        equations=[("Eq. 10 (inner objective)", "sum_i W_i L(theta; x_i)"),
                   ("virtual step", "theta'(W) = theta - eta sum_i W_i grad_theta L(theta; x_i)"),
                   ("hypergradient",
                    "h_i = d L_val(theta'(W)) / d W_i = -eta grad L_val(theta') . grad L(theta; x_i)")],
        hints=["torch.autograd.grad(..., create_graph=True) keeps the gradient a function of W.",
               "torch.func.functional_call(model, {name: tensor}, args) runs the model with other weights.",
               "proxy.attention is written out by hand so that the double backward works on the CPU.",
               "Take the gradient with respect to a detached copy of W that requires grad; leave the primary's "
               ".grad untouched."],
        tests="test_ex4_hypergradient.py",
        see=(["# after the commands of exercise 3:", "python metagrad.py --data runs/course/shapes --proxy "
              "runs/course/proxy/proxy.pt --out runs/course/exact --primary runs/course/rate/primary_warm.pt "
              "--method exact --steps 100"],
             "about 2 min. Final AUROC: noise 1.000 and watermark 0.9-0.98 (reference, --seed 0 and 1 with the "
             "primary of the same seed: 0.939, 0.974), at least as good as Eq. 6's, but misaligned only 0.65-0.8 "
             "(0.699, 0.732, against 0.861, 0.910 for exercise 3's rater on the same warm-ups); duplicates swing "
             "between seeds (0.36, 0.93). Essay: why does "
             "a one-step lookahead miss wrong captions here, when the gap between two models finds them? (Think "
             "about what a misaligned row's gradient still teaches, and over how many steps the harm builds up.)"),
    ),
    dict(
        number=5, title="FID and KID from scratch", hours=1.5, points=10, needs=[],
        goal="Compute the two distribution metrics of the evaluation from features, exactly and stably: FID's "
             "matrix square root through a symmetric eigen-decomposition, KID's unbiased MMD. See that FID is biased "
             "by the sample size and KID is not.",
        blank=[("evaluate.py", "mean_cov", "the mean and the unbiased covariance of features, in float64"),
               ("evaluate.py", "frechet_distance", "FID of two Gaussians through the symmetric eigen route"),
               ("evaluate.py", "kid", "the unbiased MMD^2 with the cubic kernel, mean and std over random subsets")],
        equations=[("FID (Heusel et al. 2017)", "|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), "
                    "Tr (S1 S2)^1/2 = sum_i sqrt(lambda_i(R S2 R)), R = S1^1/2"),
                   ("KID (Binkowski et al. 2018)", "MMD^2_u with k(x, y) = (x.y / d + 1)^3: the within-set means "
                    "leave out the diagonal")],
        hints=["np.linalg.eigh gives S1 = V diag(lam) V^T; R = V diag(sqrt(lam)) V^T.",
               "R S2 R is similar to S1 S2 (same eigenvalues) but symmetric: eigvalsh is stable on it.",
               "Clip tiny negative eigenvalues from round-off to 0 before the square root.",
               "Test yourself: two diagonal covariances give sum (sqrt(a_i) - sqrt(b_i))^2."],
        tests="test_ex5_fid_kid.py",
        see=([SETUP, "python course/see.py 5 --data runs/course/shapes"],
             "about 1 min (the evaluator is trained once, 40 s, and cached in the data folder; its image-to-caption "
             "top-1 is 0.89). Against the clean test set: the clean val set FID 0.015-0.04 (reference: 0.026) and "
             "KID within +-0.0005 of 0; the misaligned training rows the same as the clean ones (0.038 against "
             "0.023: FID sees no captions); blur and watermark 0.3-1.5; duplicates about 4; noise above 5 (12.5) "
             "with KID above 0.05. FID of the clean val set grows as N shrinks (0.026, 0.054, 0.072 at N = 300, "
             "150, 75) while KID stays within +-0.0005 of 0."),
    ),
    dict(
        number=6, title="Online selection: JEST learnability and the early-AJEST switch", hours=2, points=10,
        needs=[1],
        goal="Select each training batch from a larger scored one while training: score rows by learnability "
             "(learner loss minus reference loss on the same draws), sample without replacement from a softmax, and "
             "switch selection off for good once the learner beats its reference (early AJEST).",
        blank=[("train_t2i.py", "learnability", "the scores of a super-batch from loss(learner) and loss(reference)"),
               ("train_t2i.py", "jest_select", "keep rows sampled chunk by chunk from softmax(score / temperature)"),
               ("train_t2i.py", "AjestSwitch.watching", "whether both losses are needed: AJEST before its switch"),
               ("train_t2i.py", "AjestSwitch.on", "whether selection is on in this mode and state"),
               ("train_t2i.py", "AjestSwitch.scoring", "whether this step's super-batch is scored at all"),
               ("train_t2i.py", "AjestSwitch.update", "record the first crossing and return whether selection is on")],
        equations=[("learnability (JEST, RHO-LOSS)", "s_i = L(learner; x_i, t_i, eps_i) - L(reference; x_i, t_i, "
                    "eps_i), the same (t, eps) for both"),
                   ("JEST sampling", "keep rows without replacement from softmax(s / temperature), in chunks; "
                    "temperature 0: the top rows"),
                   ("early AJEST", "select until the first super-batch where mean L(learner) < mean L(reference), "
                    "then uniform batches for good")],
        hints=["`loss` fixes the draws: call it once for each model the mode needs (both models with `both`), so two "
               "equal models score exactly 0.",
               "A Gumbel top-k per chunk, with the rows chosen earlier masked to -inf.",
               "The super-batch that crosses is already on the new side of the switch."],
        tests="test_ex6_online.py",
        see=([SETUP, "python train_t2i.py --data runs/course/shapes --out runs/course/guide --preset quick --width 32 "
              "--steps 100 --guide-at 1 --grid-every 0",
              "python train_t2i.py --data runs/course/shapes --out runs/course/early --preset quick --steps 300 "
              "--online early_ajest --reference runs/course/guide/guide.pt --grid-every 0"],
             "about 1.5 min. runs/course/early/log.csv: `selecting` is 1 at step 50 and 0 from step 100 on, and "
             "`scored` stops growing at 320 rows per selecting step: 26880 and 27840 in the reference (--seed 0 and "
             "1: the switch at steps 83 and 86, when the learner's mean loss on a super-batch first fell below the "
             "guide's); expect the switch within steps 50-150. The first 50 steps, selecting, took 4-5x the "
             "wall-clock time of 50 plain ones (21 s against 4.6 s in `seconds`)."),
    ),
]


def by_number():
    return {e["number"]: e for e in EXERCISES}


def message(number, name, task):
    """The text of the NotImplementedError that replaces a blanked body."""
    return f"exercise {number}: {name}: {task}"
