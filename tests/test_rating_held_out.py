"""Held-out rating (metagrad.py --rate-on), the content input, the recorded cost, the uncurated-val note (issue 16)."""
import csv

import numpy as np
import pytest
import torch

import data
import metagrad
import rater
from test_metagrad import TINY, proxy_file, run  # noqa: F401 (proxy_file: its fixture, shared)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_draw_batch_draws_only_the_given_rows_and_all_rows_give_the_very_same_batch(tiny_shapes):
    d = data.load_dataset(tiny_shapes)
    feats = torch.arange(400, dtype=torch.float32)[:, None]  # the feature is the row index
    rows = torch.tensor([3, 50, 77, 301])
    b = metagrad.draw_batch(torch.Generator().manual_seed(0), feats, d, d, 32, "cpu", rows)
    assert set(b["feats"][:, 0].long().tolist()) <= set(rows.tolist())
    assert torch.equal(b["x"], data.to_float(d["images"][b["feats"][:, 0].long()]))  # rows and features agree
    plain = metagrad.draw_batch(torch.Generator().manual_seed(0), feats, d, d, 32, "cpu")
    every = metagrad.draw_batch(torch.Generator().manual_seed(0), feats, d, d, 32, "cpu", torch.arange(400))
    assert all(torch.equal(plain[k], every[k]) for k in plain)  # --rate-on 1 changes nothing


def test_rate_on_meta_trains_on_a_recorded_part_of_the_rows_and_reports_the_rest_apart(tiny_shapes, proxy_file,
                                                                                       tmp_path, capsys):
    run(tiny_shapes, proxy_file, tmp_path, "--steps", "3", "--rate-on", "0.25")
    ckpt = torch.load(tmp_path / "rater.pt", weights_only=True)
    rated = ckpt["rated_rows"]
    assert len(rated) == 100 and torch.equal(rated, rated.unique()) and ckpt["n_rows"] == 400
    assert ckpt["input"] == "losses" and set(ckpt["seconds"]) == {"warmup", "features", "meta"}
    assert all(v > 0 for v in ckpt["seconds"].values())
    feats = torch.load(tmp_path / "metagrad_state.pt", weights_only=True)["feats"]  # standardised
    unseen = torch.ones(400, dtype=torch.bool)
    unseen[rated] = False
    assert feats[rated].mean(0).abs().max() < 1e-4  # standardised on the rated rows only
    assert feats[unseen].mean(0).abs().max() > 1e-3
    assert torch.load(tmp_path / "metagrad_state.pt", weights_only=True)["seconds"] == ckpt["seconds"]
    rows = list(csv.DictReader(open(tmp_path / "metagrad_log.csv")))
    assert {"auroc_misaligned", "unseen_auroc_misaligned", "unseen_auroc_noise"} <= set(rows[-1])
    assert "(unseen " in capsys.readouterr().out.strip().splitlines()[-1]
    s = torch.load(tmp_path / "metagrad_state.pt", weights_only=True)
    assert torch.equal(s["rated_rows"], rated)


def test_content_input_gives_a_rater_on_the_trunks_pooled_first_block_that_rater_py_scores(tiny_shapes, proxy_file,
                                                                                          tmp_path):
    run(tiny_shapes, proxy_file, tmp_path, "--steps", "2", "--rater-input", "content", "--no-group")
    d = data.load_dataset(tiny_shapes)
    r, trunk, ckpt = rater.load_rater(str(tmp_path / "rater.pt"), dataset=d)
    assert ckpt["input"] == "content" and ckpt["content_blocks"] == 1 and r.config["in_dim"] == TINY["width"]
    raw = rater.content_features(trunk, data.to_float(d["images"]), d["tokens"], blocks=1)
    feats = torch.load(tmp_path / "metagrad_state.pt", weights_only=True)["feats"]
    assert torch.allclose(feats, r.standardise(raw), atol=1e-4)  # metagrad.py trained on this very view
    rater.main(["--data", tiny_shapes, "--rater", str(tmp_path / "rater.pt"), "--out", str(tmp_path / "s.npy")])
    with torch.no_grad():
        assert np.allclose(np.load(tmp_path / "s.npy"), r.logits(r.standardise(raw))[0].numpy(), atol=1e-4)


def test_a_val_split_drawn_from_the_training_rows_is_announced_in_one_line(tiny_shapes, proxy_file, tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    for split in ["train", "val", "test"]:
        d = data.load_dataset(tiny_shapes, split)
        d["meta"] = dict(d["meta"], val_source="same rows")  # as data.py --from-folder writes it
        torch.save(d, folder / f"{split}.pt")
    metagrad.main(["--data", str(folder), "--proxy", proxy_file, "--out", str(tmp_path / "run"), "--batch-size", "8",
                   "--primary-warmup", "0", "--draws", "2", "--steps", "1"])
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "val.pt" in notes[0] and "--val-from" in notes[0]
    run(tiny_shapes, proxy_file, tmp_path / "generated", "--steps", "1")  # generated data: clean val, no note
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
