"""keras-mtl compare: delta_m, the per-task budgets, the paired bootstrap intervals and
verdicts, the defaults, and tiny end-to-end comparisons (from scratch and with a preset)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from keras_mtl.compare import (
    NEAR_ZERO,
    RECORD_FILES,
    is_finished,
    run_marker,
    bootstrap_compare,
    capped_plan,
    delta_m,
    higher_is_better,
    mean_std,
    resample_indices,
    resample_keys,
    subset_raw,
    task_budgets,
    examples_fingerprint,
    verdict,
)
from keras_mtl.config import config_from_dict
from keras_mtl.errors import ConfigError

from helpers import save_tiny_preset

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------
# delta_m


def test_delta_m_higher_is_better_by_hand():
    # (0.9 - 0.8) / 0.8 = +12.5 %, (0.5 - 0.5) / 0.5 = 0 %  -> mean +6.25 %
    out = delta_m({"a": 0.9, "b": 0.5}, {"a": 0.8, "b": 0.5}, {"a": True, "b": True})
    assert out["delta_m"] == pytest.approx(6.25)
    assert out["per_task"]["a"]["relative_pct"] == pytest.approx(12.5)
    assert out["per_task"]["a"]["diff"] == pytest.approx(0.1)
    assert out["included"] == ["a", "b"] and out["excluded"] == {}


def test_delta_m_multi_task_worse_is_negative():
    out = delta_m({"a": 0.6}, {"a": 0.8}, {"a": True})
    assert out["delta_m"] == pytest.approx(-25.0)


def test_delta_m_lower_is_better_metric():
    # mse 1.0 -> 0.8 is a 20 % improvement; 1.0 -> 1.2 a 20 % loss.
    assert higher_is_better("mse") is False and higher_is_better("accuracy") is True
    better = delta_m({"r": 0.8}, {"r": 1.0}, {"r": False})
    worse = delta_m({"r": 1.2}, {"r": 1.0}, {"r": False})
    assert better["delta_m"] == pytest.approx(20.0)
    assert worse["delta_m"] == pytest.approx(-20.0)
    assert better["per_task"]["r"]["gain"] == pytest.approx(0.2)
    assert better["per_task"]["r"]["diff"] == pytest.approx(-0.2)
    # mixed: accuracy +10 % and mse -20 % (worse) -> (10 - 20) / 2 = -5 %
    mixed = delta_m({"c": 0.55, "r": 1.2}, {"c": 0.5, "r": 1.0}, {"c": True, "r": False})
    assert mixed["delta_m"] == pytest.approx(-5.0)


def test_delta_m_near_zero_baseline_is_excluded_but_reported():
    # MCC baseline 0.02: (0.30 - 0.02) / 0.02 would be +1400 % and swamp the mean.
    out = delta_m({"acc": 0.88, "mcc": 0.30}, {"acc": 0.80, "mcc": 0.02}, {"acc": True, "mcc": True})
    assert out["delta_m"] == pytest.approx(10.0)
    assert out["included"] == ["acc"]
    assert "mcc" in out["excluded"] and str(NEAR_ZERO) in out["excluded"]["mcc"]
    row = out["per_task"]["mcc"]
    assert row["included"] is False and row["relative_pct"] is None
    assert row["gain"] == pytest.approx(0.28)  # the absolute difference is still there


def test_delta_m_negative_baseline_uses_its_magnitude():
    # MCC -0.2 -> -0.1 is better: +50 %, not -50 %.
    out = delta_m({"m": -0.1}, {"m": -0.2}, {"m": True})
    assert out["delta_m"] == pytest.approx(50.0)


def test_delta_m_all_excluded_or_missing():
    out = delta_m({"m": 0.3, "n": None}, {"m": 0.0, "n": 0.5}, {"m": True, "n": True})
    assert out["delta_m"] is None
    assert set(out["excluded"]) == {"m", "n"}


# ---------------------------------------------------------------------------
# budgets and plans


def test_task_budgets_drawn():
    # 2 epochs x 100 steps x batch 32 = 6400 examples drawn; p = (0.5, 0.3, 0.2).
    probs = [[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]]
    b = task_budgets(probs, ["a", "b", "c"], steps_per_epoch=100, batch_size=32)
    assert b["a"]["examples"] == pytest.approx(3200)
    assert b["a"]["steps"] == 100 and b["b"]["steps"] == 60 and b["c"]["steps"] == 40
    assert b["a"]["epochs"] == 2 and b["a"]["steps_per_epoch"] == 50
    assert sum(x["steps"] for x in b.values()) == 200  # the multi-task run's total
    assert b["b"]["p"] == pytest.approx(0.3)


def test_task_budgets_follow_a_changing_schedule():
    # annealed-style: p changes per epoch; the budget sums the epochs.
    probs = [[0.8, 0.2], [0.6, 0.4], [0.5, 0.5]]
    b = task_budgets(probs, ["big", "small"], steps_per_epoch=10, batch_size=8)
    assert b["big"]["steps"] == round((0.8 + 0.6 + 0.5) * 10)  # 19
    assert b["small"]["steps"] == round((0.2 + 0.4 + 0.5) * 10)  # 11
    assert b["small"]["epochs"] == 3 and b["small"]["steps_per_epoch"] == 4


def test_task_budgets_at_least_one_step():
    b = task_budgets([[0.99, 0.01]], ["a", "b"], steps_per_epoch=10, batch_size=4)
    assert b["b"]["steps"] == 1 and b["b"]["epochs"] == 1 and b["b"]["steps_per_epoch"] == 1


def test_task_budgets_labelled_counts_shared_examples():
    # pos and chunk label the same sentences: a batch drawn for either trains both.
    overlap = {
        "pos": {"pos": 1.0, "chunk": 1.0, "sst2": 0.0},
        "chunk": {"pos": 1.0, "chunk": 1.0, "sst2": 0.0},
        "sst2": {"pos": 0.0, "chunk": 0.0, "sst2": 1.0},
    }
    probs = [[0.25, 0.25, 0.5]]
    b = task_budgets(probs, ["pos", "chunk", "sst2"], 100, 10, overlap=overlap)
    assert b["pos"]["steps"] == 50 and b["chunk"]["steps"] == 50 and b["sst2"]["steps"] == 50
    drawn = task_budgets(probs, ["pos", "chunk", "sst2"], 100, 10)
    assert drawn["pos"]["steps"] == 25


def test_capped_plan_keeps_epochs():
    assert capped_plan(4, 1000, None) == (4, 1000)
    assert capped_plan(4, 1000, 5000) == (4, 1000)
    assert capped_plan(4, 1000, 1500) == (4, 375)
    assert capped_plan(4, 1000, 3) == (3, 1)


def test_mean_std():
    assert mean_std([0.5])["std"] is None
    s = mean_std([1.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == pytest.approx(math.sqrt(2.0))
    assert mean_std([None])["mean"] is None


def test_subset_raw():
    raw = {"name": "x", "tasks": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}
    assert [t["name"] for t in subset_raw(raw, ["c", "a"])["tasks"]] == ["a", "c"]
    assert len(raw["tasks"]) == 3  # not modified
    with pytest.raises(ConfigError, match="no task named 'zz'"):
        subset_raw(raw, ["a", "zz"])


def test_sub_run_marker_is_portable_and_old_markers_still_match(tmp_path):
    """A distilled run names its teachers by absolute path; the marker keeps them relative to the
    comparison's root, so the same comparison in another directory (or its --records) matches, and
    a marker written with absolute paths (before --records existed) still matches in its own root."""
    raw = {"name": "x", "tasks": [{"name": "a", "teacher": str((tmp_path / "seed0" / "single-a").resolve())}]}
    marker = run_marker(raw, tmp_path)
    assert marker["config"]["tasks"][0]["teacher"] == str(Path("seed0") / "single-a")
    assert raw["tasks"][0]["teacher"].startswith("/")  # the config itself is not changed
    moved = {"name": "x", "tasks": [{"name": "a", "teacher": str((tmp_path / "b" / "seed0" / "single-a").resolve())}]}
    assert run_marker(moved, tmp_path / "b") == marker
    run = tmp_path / "seed0" / "distilled"
    run.mkdir(parents=True)
    for name in RECORD_FILES:
        (run / name).write_text("{}", encoding="utf-8")
    (run / "compare_run.json").write_text(json.dumps({"config": raw}), encoding="utf-8")  # the old, absolute form
    assert is_finished(run, marker, tmp_path)
    assert not is_finished(run, marker, tmp_path, need_model=True)  # a teacher or a served model needs model.keras
    other = {"name": "x", "tasks": [{"name": "a", "teacher": "seed1/single-a"}]}
    assert not is_finished(run, run_marker(other, tmp_path), tmp_path)
    (run / "compare_result.json").unlink()
    assert not is_finished(run, marker, tmp_path)  # neither its predictions nor its model: not reusable


def test_sub_run_marker_holds_data_paths_relative_to_the_root(tmp_path):
    """A clone elsewhere, with its data at the same place relative to it (../shared beside the
    clone, as CI has it), matches a comparison recorded in another clone; other data does not."""

    def raw(clone, data="sst2"):
        shared = tmp_path / clone / "shared" / "data" / data
        return {"name": "x", "tasks": [{"name": "a", "data": {
            "format": "delimited", "train": str(shared / "train.tsv"), "test": str(shared / "dev.tsv"), "dev": None,
            "text_column": "sentence"}}]}

    root_a, root_b = tmp_path / "a" / "repo" / "runs" / "cmp", tmp_path / "b" / "repo" / "runs" / "cmp"
    marker = run_marker(raw("a"), root_a)
    data = marker["config"]["tasks"][0]["data"]
    assert data["train"] == str(Path("..", "..", "..", "shared", "data", "sst2", "train.tsv"))
    assert data["dev"] is None and data["text_column"] == "sentence"  # not paths: as they are
    assert run_marker(raw("b"), root_b) == marker
    assert run_marker(raw("b", data="cola"), root_b) != marker
    run = root_a / "seed0" / "mtl"  # recorded in clone a with absolute paths (before this change)
    run.mkdir(parents=True)
    for name in RECORD_FILES:
        (run / name).write_text("{}", encoding="utf-8")
    (run / "compare_run.json").write_text(json.dumps({"config": raw("a")}), encoding="utf-8")
    assert is_finished(run, run_marker(raw("a"), root_a), root_a)
    (run / "compare_run.json").write_text(json.dumps(marker), encoding="utf-8")  # the portable form compare writes
    records_b = tmp_path / "b" / "repo" / "records" / "seed0" / "mtl"
    records_b.parent.mkdir(parents=True)
    import shutil

    shutil.copytree(run, records_b)
    assert is_finished(records_b, run_marker(raw("b"), root_b), root_b)  # clone b reuses clone a's record


def test_sub_run_marker_identifies_data_files_by_content(tmp_path):
    """A data file is identified by its bytes: the same data under any path, and a comparison
    run from any work dir (here one at another depth), matches; a file edited in place does
    not; a record written with paths relative to its root (before) still matches there."""
    import os
    import shutil

    from keras_mtl.compare import CONTENT_PREFIX

    def raw(train, test):
        return {"name": "x", "tasks": [{"name": "a", "data": {
            "format": "delimited", "train": str(train), "test": str(test), "dev": None}}]}

    here, there = tmp_path / "shared" / "sst2", tmp_path / "elsewhere" / "deeper" / "copy"
    for folder in (here, there):
        folder.mkdir(parents=True)
        (folder / "train.tsv").write_text("sentence\tlabel\ngood\t1\n", encoding="utf-8")
        (folder / "dev.tsv").write_text("sentence\tlabel\nbad\t0\n", encoding="utf-8")
    root_a, root_b = tmp_path / "repo" / "runs" / "cmp", tmp_path / "tmp" / "c"
    marker = run_marker(raw(here / "train.tsv", here / "dev.tsv"), root_a)
    data = marker["config"]["tasks"][0]["data"]
    assert data["train"].startswith(CONTENT_PREFIX) and data["train"] != data["test"]
    assert data["dev"] is None
    assert run_marker(raw(there / "train.tsv", there / "dev.tsv"), root_b) == marker  # same bytes, other place and root
    assert run_marker(marker["config"], root_b) == marker  # a saved marker reads as it was written

    run = root_a / "seed0" / "mtl"  # a record, reused from a work dir at another depth
    run.mkdir(parents=True)
    for name in RECORD_FILES:
        (run / name).write_text("{}", encoding="utf-8")
    (run / "compare_run.json").write_text(json.dumps(marker), encoding="utf-8")
    records = tmp_path / "records" / "seed0" / "mtl"
    shutil.copytree(run, records)
    assert is_finished(records, run_marker(raw(here / "train.tsv", here / "dev.tsv"), root_b), root_b)

    # a record from before: data paths relative to the root it ran in; matches from that root
    old = raw(os.path.relpath(here / "train.tsv", root_a), os.path.relpath(here / "dev.tsv", root_a))
    (run / "compare_run.json").write_text(json.dumps({"config": old}), encoding="utf-8")
    assert is_finished(run, marker, root_a)

    (there / "train.tsv").write_text("sentence\tlabel\ngood\t0\n", encoding="utf-8")  # edited in place
    assert run_marker(raw(there / "train.tsv", there / "dev.tsv"), root_b) != marker
    missing = run_marker(raw(tmp_path / "gone.tsv", here / "dev.tsv"), root_a)["config"]["tasks"][0]["data"]
    assert missing["train"] == os.path.relpath(tmp_path / "gone.tsv", root_a)  # not there: by its path


def test_a_damaged_or_foreign_record_is_not_reused(tmp_path):
    from keras_mtl.compare import recorded_result

    good = {"params": 7, "test": "2:ab", "predictions": {"t": [[0, "a"], [1, ["B-NP", "O"]]]}}
    (tmp_path / "compare_result.json").write_text(json.dumps(good), encoding="utf-8")
    assert recorded_result(tmp_path, "2:ab") == (7, {"t": {0: "a", 1: ("B-NP", "O")}})  # tag sequences as tuples
    assert recorded_result(tmp_path, "2:cd") is None  # other test examples
    for damaged in ({"test": "2:ab"}, {"params": 7, "test": "2:ab", "predictions": [1, 2]}, ["x"]):
        (tmp_path / "compare_result.json").write_text(json.dumps(damaged), encoding="utf-8")
        assert recorded_result(tmp_path, "2:ab") is None
    (tmp_path / "compare_result.json").write_text("{not json", encoding="utf-8")
    assert recorded_result(tmp_path, "2:ab") is None


def test_examples_fingerprint_changes_with_texts_labels_and_order():
    from keras_mtl.data.example import Example

    a, b = Example("good film", {"s": "pos"}), Example("bad film", {"s": "neg"}, text_pair="x")
    base = examples_fingerprint([a, b])
    assert base == examples_fingerprint([Example("good film", {"s": "pos"}), Example("bad film", {"s": "neg"}, text_pair="x")])
    assert base.startswith("2:")
    assert base != examples_fingerprint([b, a])
    assert base != examples_fingerprint([a, Example("bad film", {"s": "pos"}, text_pair="x")])
    assert base != examples_fingerprint([a, Example("bad film", {"s": "neg"}, text_pair="y")])


def test_compare_records_must_be_a_directory(tmp_path):
    from keras_mtl.compare import compare

    (tmp_path / "records").write_text("not a directory", encoding="utf-8")
    with pytest.raises(ConfigError, match="--records must be a directory"):
        compare(_tiny_config(), tmp_path / "cmp", records=tmp_path / "records", log=lambda line: None)
    assert not (tmp_path / "cmp").exists()


def test_compare_bad_tasks_leaves_no_work_dir(tmp_path):
    from keras_mtl.compare import compare

    root = tmp_path / "cmp"
    with pytest.raises(ConfigError, match="no task named 'zz'"):
        compare(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml", workdir=root, tasks="topic,zz")
    assert not root.exists()


# ---------------------------------------------------------------------------
# the paired bootstrap


def _sample(truth, mtl, single, metric="accuracy", **options):
    """A bootstrap sample; `mtl` / `single` are lists of per-seed prediction lists."""
    return {"metric": metric, "truth": list(truth), "mtl": [list(p) for p in mtl], "single": [list(p) for p in single],
            "options": options}


def test_verdict():
    assert verdict(0.01, 0.2) == "better"
    assert verdict(-0.3, -0.001) == "worse"
    assert verdict(-0.1, 0.1) == "not distinguishable"
    assert verdict(0.0, 0.0) == "not distinguishable"  # touching 0 is not above it
    assert verdict(0.0, 0.5) == "not distinguishable" and verdict(-0.5, 0.0) == "not distinguishable"
    assert verdict(None, None) == "n/a"


def test_verdict_settled_by_the_replicate_count():
    from keras_mtl.compare import verdict_settled

    def gains(n, below):  # n replicates, `below` of them at or below 0
        return np.r_[np.full(below, -1.0), np.full(n - below, 1.0)]

    # 2.5% of 1000 replicates at or below 0: the lower bound sits on 0, any other draw could turn the verdict
    assert verdict_settled(gains(1000, 25)) is False
    # 3% below 0: Monte Carlo error sqrt(.025 * .975 / B) is 0.49 points at 1000 replicates, 0.16 at 10000
    assert verdict_settled(gains(1000, 30)) is False and verdict_settled(gains(10000, 300)) is True
    assert verdict_settled(gains(1000, 0)) is True  # every replicate above 0: better, whatever the count
    assert verdict_settled(gains(1000, 500)) is True  # half below: not distinguishable, whatever the count
    assert verdict_settled(np.zeros(1000)) is True  # identical models: both shares are 1
    assert verdict_settled(-gains(1000, 25)) is False  # the upper bound on 0: `worse` is not settled either
    assert verdict_settled([np.nan, np.inf]) is None and verdict_settled([]) is None


def test_bootstrap_identical_predictions_give_a_zero_interval():
    rng = np.random.default_rng(3)
    truth = rng.choice(["a", "b", "c"], 50).tolist()
    preds = [rng.choice(["a", "b", "c"], 50).tolist() for _ in range(3)]  # 3 seeds
    sample = {"t": _sample(truth, preds, preds, "macro_f1")}
    out = bootstrap_compare(sample, replicates=200, seeds_resampled=False)
    row = out["tasks"]["t"]
    assert row["gain"] == {"point": 0.0, "low": 0.0, "high": 0.0}
    assert row["verdict"] == "not distinguishable"
    assert row["mtl"]["low"] < row["mtl"]["point"] < row["mtl"]["high"]  # the scores themselves vary
    assert out["delta_m"]["point"] == 0.0
    assert (out["delta_m"]["low"], out["delta_m"]["high"]) == (0.0, 0.0)
    assert out["delta_m"]["verdict"] == "not distinguishable"
    # drawing the seeds: the seeds differ from each other, so the interval widens around 0
    drawn = bootstrap_compare(sample, replicates=200)["tasks"]["t"]
    assert drawn["gain"]["point"] == 0.0 and drawn["gain"]["low"] < 0.0 < drawn["gain"]["high"]
    assert drawn["verdict"] == "not distinguishable"


def test_bootstrap_seed_level_by_hand():
    # Seed 0 of the multi-task model is always right, seed 1 always wrong, and both
    # single-task seeds always right: on any resample of the examples the seeds score
    # 1, 0 and 1, 1. Test-set sampling alone gives the gain -0.5 every time ("worse");
    # drawing the 2 multi-task seeds with replacement gives 1, 0.5 or 0 for it (p = 1/4,
    # 1/2, 1/4), so the gain is 0, -0.5 or -1 and the 95% interval [-1, 0].
    truth = ["a"] * 30
    sample = {"t": _sample(truth, [truth, ["b"] * 30], [truth, truth])}
    fixed = bootstrap_compare(sample, replicates=500, seeds_resampled=False)["tasks"]["t"]
    assert fixed["gain"] == {"point": -0.5, "low": -0.5, "high": -0.5} and fixed["verdict"] == "worse"
    out = bootstrap_compare(sample, replicates=4000, keep_replicates=True)
    row = out["tasks"]["t"]
    assert row["gain"]["point"] == -0.5 and (row["gain"]["low"], row["gain"]["high"]) == (-1.0, 0.0)
    assert row["verdict"] == "not distinguishable"
    gains = np.asarray(out["replicates_values"]["t"]["gain"])
    for value, p in ((0.0, 0.25), (-0.5, 0.5), (-1.0, 0.25)):
        assert np.mean(gains == value) == pytest.approx(p, abs=0.03)
    assert out["seeds_resampled"] is True and "seeds of each side are drawn" in out["method"]


def test_bootstrap_seed_draws_are_shared_by_the_tasks_of_a_replicate():
    # Two tasks with the same samples: one multi-task run answers both, so a replicate
    # draws its seeds once; with the same seed-dependent scores the gains move together.
    truth = ["a"] * 20
    sample = _sample(truth, [truth, ["b"] * 20, truth], [truth] * 3)
    out = bootstrap_compare({"x": sample, "y": sample}, replicates=300, keep_replicates=True)
    r = out["replicates_values"]
    np.testing.assert_array_equal(r["x"]["gain"], r["y"]["gain"])
    with pytest.raises(ValueError, match="same number of seeds"):
        bootstrap_compare({"x": sample, "y": _sample(truth, [truth], [truth])}, replicates=5)


def test_bootstrap_tasks_on_the_same_examples_share_their_resamples():
    # Task x: the multi-task model is right on examples 0-9 only, the single-task model on 10-19 only;
    # task y: the other way round. On one shared resample their gains are exact opposites; resampled
    # apart (no indices, as before), they are not.
    truth = ["a"] * 20
    first, second = ["a"] * 10 + ["b"] * 10, ["b"] * 10 + ["a"] * 10
    ids = list(range(20))
    x = {**_sample(truth, [first], [second]), "indices": ids}
    y = {**_sample(truth, [second], [first]), "indices": ids}
    assert resample_keys({"x": x, "y": y})["x"] == resample_keys({"x": x, "y": y})["y"] != "x"
    shared = bootstrap_compare({"x": x, "y": y}, replicates=200, keep_replicates=True)["replicates_values"]
    np.testing.assert_allclose(shared["x"]["gain"], -np.asarray(shared["y"]["gain"]))
    assert np.std(shared["x"]["gain"]) > 0
    apart = {t: {k: v for k, v in s.items() if k != "indices"} for t, s in (("x", x), ("y", y))}
    sep = bootstrap_compare(apart, replicates=200, keep_replicates=True)["replicates_values"]
    assert not np.allclose(sep["x"]["gain"], -np.asarray(sep["y"]["gain"]))
    # other examples, or a task alone, keep the task's own stream
    z = {**_sample(truth, [first], [second]), "indices": list(range(100, 120))}
    assert resample_keys({"x": x, "z": z}) == {"x": "x", "z": "z"}
    assert resample_keys({"x": x}) == {"x": "x"}


def test_bootstrap_always_right_vs_always_wrong():
    truth = ["a", "b"] * 15
    wrong = ["b", "a"] * 15
    out = bootstrap_compare({"t": _sample(truth, [truth], [wrong])}, replicates=100)
    row = out["tasks"]["t"]
    assert row["gain"] == {"point": 1.0, "low": 1.0, "high": 1.0}
    assert row["verdict"] == "better"
    flipped = bootstrap_compare({"t": _sample(truth, [wrong], [truth])}, replicates=100)["tasks"]["t"]
    assert flipped["gain"]["high"] == -1.0 and flipped["verdict"] == "worse"
    # the baseline scores 0: no relative change, so delta_m has no task
    assert out["delta_m"]["point"] is None and out["delta_m"]["verdict"] == "n/a"
    assert "t" in out["delta_m"]["excluded"]


def test_bootstrap_lower_is_better_metric_is_sign_adjusted():
    truth = [0.0] * 20
    good, bad = [0.1] * 20, [0.5] * 20  # mse 0.01 vs 0.25: the multi-task model is better
    row = bootstrap_compare({"r": _sample(truth, [good], [bad], "mse")}, replicates=50)["tasks"]["r"]
    assert row["higher_is_better"] is False
    assert row["gain"]["point"] == pytest.approx(0.24)
    assert row["gain"]["low"] == pytest.approx(0.24) and row["verdict"] == "better"


def test_bootstrap_two_examples_by_hand():
    # The multi-task model is right on both examples, the single-task model on the
    # first only. A resample of 2 holds the second example 0, 1 or 2 times
    # (p = 1/4, 1/2, 1/4): the gain is 0, 0.5 or 1, so the 95% interval is [0, 1].
    truth = ["a", "a"]
    out = bootstrap_compare(
        {"t": _sample(truth, [["a", "a"]], [["a", "b"]])}, replicates=4000, keep_replicates=True
    )
    row = out["tasks"]["t"]
    assert row["gain"]["point"] == 0.5
    assert (row["gain"]["low"], row["gain"]["high"]) == (0.0, 1.0)
    assert row["verdict"] == "not distinguishable"
    gains = np.asarray(out["replicates_values"]["t"]["gain"])
    for value, p in ((0.0, 0.25), (0.5, 0.5), (1.0, 0.25)):
        assert np.mean(gains == value) == pytest.approx(p, abs=0.03)


def test_bootstrap_accuracy_difference_matches_the_normal_approximation():
    # d_i = correct_mtl - correct_single: +1 on 80 examples, -1 on 40, 0 on 280.
    # mean 0.1, var(d) = 120/400 - 0.01 = 0.29: 95% interval 0.1 +- 1.96 sqrt(0.29/400).
    n = 400
    truth = ["a"] * n
    mtl = ["a"] * 80 + ["b"] * 40 + ["a"] * 140 + ["b"] * 140
    single = ["b"] * 80 + ["a"] * 40 + ["a"] * 140 + ["b"] * 140
    row = bootstrap_compare({"t": _sample(truth, [mtl], [single])}, replicates=2000)["tasks"]["t"]
    half = 1.96 * math.sqrt(0.29 / n)
    assert row["gain"]["point"] == pytest.approx(0.1)
    assert row["gain"]["low"] == pytest.approx(0.1 - half, abs=0.01)
    assert row["gain"]["high"] == pytest.approx(0.1 + half, abs=0.01)
    assert row["verdict"] == "better"  # 0.1 - 0.053 > 0


def test_bootstrap_brute_force_pairs_resamples_and_averages_seeds():
    from itertools import product

    from keras_mtl.metrics import compute_metric

    truth = ["x", "y", "z", "x"]
    mtl = [["x", "y", "x", "x"], ["x", "z", "z", "y"]]  # two seeds
    single = [["y", "y", "z", "z"], ["x", "x", "x", "x"]]
    reps = 3000
    out = bootstrap_compare({"t": _sample(truth, mtl, single, "macro_f1")}, replicates=reps, seed=7,
                            keep_replicates=True, seeds_resampled=False)

    def score(preds, idx):  # the metric per seed on the resample, then the mean over seeds
        return np.mean([compute_metric("macro_f1", [truth[i] for i in idx], [p[i] for i in idx]) for p in preds])

    # 1. replicate by replicate: the same resample for both models, seeds averaged
    draws = list(resample_indices(len(truth), reps, 7, "t"))
    want = np.array([score(mtl, idx) - score(single, idx) for idx in draws])
    got = np.asarray(out["replicates_values"]["t"]["gain"])
    np.testing.assert_allclose(got, want)
    row = out["tasks"]["t"]
    assert (row["gain"]["low"], row["gain"]["high"]) == tuple(np.percentile(want, [2.5, 97.5]))
    assert row["gain"]["point"] == pytest.approx(score(mtl, range(4)) - score(single, range(4)))
    # 2. against the exact bootstrap distribution: all 4^4 equally likely resamples
    exact = np.array([score(mtl, idx) - score(single, idx) for idx in product(range(4), repeat=4)])
    assert got.mean() == pytest.approx(exact.mean(), abs=0.01)
    assert got.std() == pytest.approx(exact.std(), rel=0.05)
    # pooling the seeds' predictions into one list would give another point value
    pooled = compute_metric("macro_f1", truth * 2, mtl[0] + mtl[1]) - compute_metric("macro_f1", truth * 2, single[0] + single[1])
    assert row["gain"]["point"] != pytest.approx(pooled)


def test_bootstrap_delta_m_interval_from_the_replicates():
    n = 40
    truth = ["a"] * n
    half = ["a"] * (n // 2) + ["b"] * (n // 2)
    samples = {
        "up": _sample(truth, [truth], [half]),  # S = 0.5, M = 1: +100 % at the point
        "same": _sample(truth, [half], [half]),  # 0 %
        "zero": _sample(truth, [half], [["b"] * n], "accuracy"),  # baseline 0: left out of delta_m
    }
    out = bootstrap_compare(samples, replicates=500, keep_replicates=True)
    dm = out["delta_m"]
    assert dm["included"] == ["up", "same"] and "zero" in dm["excluded"]
    assert dm["point"] == pytest.approx(50.0)
    r = out["replicates_values"]
    want = np.mean([100 * np.asarray(r[t]["gain"]) / np.abs(np.asarray(r[t]["single"])) for t in ("up", "same")], axis=0)
    np.testing.assert_allclose(r["delta_m"], want)
    assert (dm["low"], dm["high"]) == tuple(np.percentile(want, [2.5, 97.5]))
    assert dm["replicates_used"] == 500
    assert dm["low"] > 0 and dm["verdict"] == "better"
    assert out["tasks"]["same"]["verdict"] == "not distinguishable"
    assert out["tasks"]["zero"]["verdict"] == "better"  # its absolute gain is still tested


def test_bootstrap_task_intervals_do_not_depend_on_the_other_tasks():
    rng = np.random.default_rng(0)
    truth = rng.choice(["a", "b"], 60).tolist()
    a = _sample(truth, [rng.choice(["a", "b"], 60).tolist()], [rng.choice(["a", "b"], 60).tolist()])
    b = _sample(truth, [truth], [truth])
    alone = bootstrap_compare({"a": a}, replicates=300)["tasks"]["a"]
    both = bootstrap_compare({"b": b, "a": a}, replicates=300)["tasks"]["a"]
    assert alone == both
    other_seed = bootstrap_compare({"a": a}, replicates=300, seed=1)["tasks"]["a"]
    assert other_seed["gain"] != alone["gain"]  # the seed is used


def test_bootstrap_tagging_and_positive_class():
    truth = [("B-NP", "I-NP", "O"), ("B-VP", "O")] * 10
    pred = [("B-NP", "I-NP", "O"), ("O", "O")] * 10
    row = bootstrap_compare({"chunk": _sample(truth, [truth], [pred], "span_f1")}, replicates=100)["tasks"]["chunk"]
    assert row["mtl"]["point"] == 1.0 and row["single"]["point"] == pytest.approx(2 / 3)
    assert row["verdict"] == "better"
    # f1 of class "yes": only the positive class counts
    truth, mtl, single = ["yes", "no"] * 10, ["yes", "yes"] * 10, ["no", "no"] * 10
    row = bootstrap_compare({"p": _sample(truth, [mtl], [single], "f1", positive_class="yes")}, replicates=50)["tasks"]["p"]
    assert row["mtl"]["point"] == pytest.approx(2 / 3) and row["single"]["point"] == 0.0


def test_bootstrap_bad_input():
    with pytest.raises(ConfigError, match="--bootstrap must be >= 1"):
        bootstrap_compare({"t": _sample(["a"], [["a"]], [["a"]])}, replicates=0)
    with pytest.raises(ValueError, match="task 't'.*single"):
        bootstrap_compare({"t": _sample(["a", "b"], [["a", "b"]], [["a"]])}, replicates=5)
    empty = bootstrap_compare({"t": _sample([], [[]], [[]])}, replicates=5)
    assert empty["tasks"]["t"]["verdict"] == "n/a" and empty["delta_m"]["point"] is None


# ---------------------------------------------------------------------------
# defaults: 3 seeds, the labelled budget, 1000 replicates


def test_compare_defaults():
    import argparse
    import inspect

    from keras_mtl.cli import build_parser
    from keras_mtl.cli.compare import add_arguments
    from keras_mtl.compare import compare

    params = inspect.signature(compare).parameters
    assert params["seeds"].default == 3 and params["budget"].default == "labelled"
    assert params["bootstrap"].default == 1000
    args = build_parser().parse_args(["compare", "x.yaml"])
    assert (args.seeds, args.budget, args.bootstrap, args.records) == (3, "labelled", 1000, None)
    args = build_parser().parse_args(["compare", "x.yaml", "--bootstrap", "200", "--budget", "drawn", "--records", "r"])
    assert (args.bootstrap, args.budget, args.records) == (200, "drawn", "r")
    parser = argparse.ArgumentParser(prog="keras-mtl compare")
    add_arguments(parser)
    assert parser.parse_args(["x.yaml"]).seeds == 3


@pytest.mark.parametrize("value, message", [("0", "must be >= 1, got 0"), ("many", "expected an integer")])
def test_compare_bad_bootstrap_flag(capsys, value, message):
    from keras_mtl.cli import main

    with pytest.raises(SystemExit) as e:
        main(["compare", "x.yaml", "--bootstrap", value])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "argument --bootstrap" in err[0] and message in err[0]


def _fake_result(budget="labelled", seeds=(0, 1, 2)):
    """A compare result with every field compare_markdown reads (two tasks)."""
    truth = ["a", "b"] * 20
    samples = {
        "topic": _sample(truth, [truth] * len(seeds), [["a"] * 40] * len(seeds)),
        "sentiment": _sample(truth, [["a"] * 40] * len(seeds), [["a"] * 40] * len(seeds), "mcc"),
    }
    boot = bootstrap_compare(samples, replicates=1000)  # enough for the verdicts to be settled (verdict_settled)
    names = list(samples)
    metrics = {}
    for t in names:
        ci = boot["tasks"][t]
        stat = lambda x: {"mean": x, "std": 0.0, "values": [x] * len(seeds)}  # noqa: E731
        metrics[t] = {"metric": ci["metric"], "higher_is_better": True, "mtl": stat(ci["mtl"]["point"]),
                      "single": stat(ci["single"]["point"]), "all": {}, "ci": ci, "verdict": ci["verdict"]}
        metrics[t]["all"][ci["metric"]] = {"mtl": metrics[t]["mtl"], "single": metrics[t]["single"]}
    dm = delta_m({t: metrics[t]["mtl"]["mean"] for t in names}, {t: metrics[t]["single"]["mean"] for t in names},
                 {t: True for t in names})
    per_task = {t: {"p": 0.5, "examples": 100.0, "steps": 10, "epochs": 2, "steps_per_epoch": 5} for t in names}
    fit = {"mean": 1.0, "std": 0.0, "values": [1.0]}
    return {
        "name": "fake", "tasks": names, "seeds": list(seeds), "backend": "tensorflow", "split": "test",
        "budget": {"mode": budget, "per_task": per_task, "labels_are_examples": False},
        "mtl_plan": {"epochs": 2, "steps_per_epoch": 10, "total_steps": 20, "batch_size": 8}, "max_steps": None,
        "steps": {"mtl": 20, "single": {t: 10 for t in names}}, "metrics": metrics,
        "delta_m": {"value_pct": dm["delta_m"], "per_seed_pct": [dm["delta_m"]] * len(seeds), "convention": "c.",
                    "included": dm["included"], "excluded": dm["excluded"], "per_task": dm["per_task"],
                    "ci": boot["delta_m"], "verdict": boot["delta_m"]["verdict"]},
        "bootstrap": {"method": boot["method"], "seeds_resampled": boot["seeds_resampled"], "replicates": 1000,
                      "seed": 0, "level": 0.95, "seconds": 0.1, "predictions": "test_predictions.json"},
        "params": {"mtl": 10, "single": {t: 8 for t in names}, "single_total": 16, "ratio_mtl_to_singles": 0.625},
        "fit_seconds": {"mtl": fit, "single": {t: fit for t in names}, "single_total": 2.0},
        "serving": None, "plots": [], "seconds": 3.0,
    }


def test_compare_markdown_reports_intervals_verdicts_budget_and_seeds():
    from keras_mtl.compare import compare_markdown

    md = compare_markdown(_fake_result())
    assert "mean ± std over 3 seeds (0, 1, 2); per-task budget `labelled`" in md
    assert "two-level bootstrap: seeds and test examples (1000 replicates, seed 0" in md
    assert "the interval holds the seed spread and the test-set sampling" in md
    one = compare_markdown(_fake_result(seeds=(0,)))  # one seed: only the test examples are resampled
    assert "paired bootstrap over the test examples (1000 replicates, seed 0" in one
    # topic: always right vs right on half: +50 points, the interval is above 0
    topic = next(line for line in md.splitlines() if line.startswith("| topic | accuracy |"))
    cells = [c.strip() for c in topic.strip("|").split("|")]
    assert cells[4] == "+50.00" and cells[6] == "better"
    low, high = (float(x) for x in cells[5].strip("[]").split(","))
    assert 0 < low < 50 < high < 100  # the single-task score varies over the resamples
    sentiment = next(line for line in md.splitlines() if line.startswith("| sentiment | mcc |"))
    assert "| +0.00 | [+0.00, +0.00] | not distinguishable |" in sentiment
    assert "**Δm = +100.00%**, 95% CI [" in md and "**better**" in md
    assert "## Confidence intervals (95%, primary metric)" in md
    assert "Per-task budget mode: `drawn`" in compare_markdown(_fake_result("drawn", seeds=(0,)))
    assert "(unsettled)" not in md and "Unsettled verdicts" not in md  # both verdicts are far from the boundary


def test_compare_markdown_marks_verdicts_the_replicates_do_not_settle():
    from keras_mtl.compare import compare_markdown

    result = _fake_result()
    result["metrics"]["topic"]["ci"]["settled"] = False
    result["delta_m"]["ci"]["settled"] = False
    md = compare_markdown(result)
    topic = next(line for line in md.splitlines() if line.startswith("| topic | accuracy |"))
    assert "| better (unsettled) |" in topic
    assert "**better (unsettled)**" in md  # delta_m's line
    assert "**Unsettled verdicts** (topic, Δm)" in md and "larger `--bootstrap`" in md


# ---------------------------------------------------------------------------
# end to end


def _tiny_config():
    demo = lambda kind, n: {"format": "demo", "kind": kind, "train": n, "dev": 40, "test": 40}  # noqa: E731
    return {
        "name": "tinycmp",
        "seed": 0,
        "tasks": [
            {"name": "topic", "type": "classification", "metrics": ["accuracy", "macro_f1"], "data": demo("topic", 240)},
            {"name": "sentiment", "type": "classification", "metrics": ["mcc", "accuracy"], "data": demo("sentiment", 120)},
            {"name": "pos", "type": "tagging", "data": demo("pos", 100)},
        ],
        "model": {
            "vocabulary_size": 200,
            "max_sequence_length": 32,
            "hidden_dim": 16,
            "num_layers": 1,
            "num_heads": 2,
            "intermediate_dim": 32,
            "task_conditioning": "none",
        },
        "train": {"batch_size": 16, "epochs": 2, "bucket_lengths": [16], "jit_compile": False},
    }


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"


@pytest.mark.slow
def test_compare_end_to_end(tmp_path):
    import yaml

    from keras_mtl.cli import main
    from keras_mtl.compare import compare

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(_tiny_config()), encoding="utf-8")
    out = tmp_path / "cmp"
    status = main([
        "compare", str(cfg), "--workdir", str(out), "--seeds", "1", "--tasks", "topic,sentiment",
        "--max-steps", "10", "--serving-texts", "32", "--quiet",
    ])
    assert status == 0
    result = json.loads((out / "compare.json").read_text())
    assert result["tasks"] == ["topic", "sentiment"]  # --tasks: pos is not trained at all
    assert result["budget"]["mode"] == "labelled" and result["seeds"] == [0]  # the default budget; --seeds 1
    assert result["bootstrap"]["replicates"] == 1000 and result["bootstrap"]["level"] == 0.95
    assert not (out / "seed0" / "single-pos").exists()
    assert result["mtl_plan"]["total_steps"] <= 10 and result["mtl_plan"]["epochs"] == 2
    budgets = result["budget"]["per_task"]
    assert abs(sum(b["steps"] for b in budgets.values()) - result["mtl_plan"]["total_steps"]) <= 1
    for t in ("topic", "sentiment"):
        assert 0.0 <= result["metrics"][t]["mtl"]["mean"] <= 1.0
        assert result["metrics"][t]["single"]["mean"] is not None
        assert len(result["curves"][t]["mtl"]["epochs"]) == 2
        assert result["serving"]["single"][t]["texts_per_s"] > 0
    for t in ("topic", "sentiment"):
        # every run's predictions on the multi-task test split reproduce its own test report
        ci = result["metrics"][t]["ci"]
        assert ci["n"] == 40
        assert ci["mtl"]["point"] == pytest.approx(result["metrics"][t]["mtl"]["mean"])
        assert ci["single"]["point"] == pytest.approx(result["metrics"][t]["single"]["mean"])
        assert ci["gain"]["low"] <= ci["gain"]["point"] <= ci["gain"]["high"]
        assert result["metrics"][t]["verdict"] in ("better", "worse", "not distinguishable")
    dm = result["delta_m"]
    if dm["value_pct"] is not None:
        assert dm["ci"]["point"] == pytest.approx(dm["value_pct"])
        assert dm["ci"]["low"] <= dm["value_pct"] <= dm["ci"]["high"]
    saved = json.loads((out / "test_predictions.json").read_text())
    assert saved["seeds"] == [0] and len(saved["tasks"]["topic"]["indices"]) == 40
    assert len(saved["tasks"]["topic"]["mtl"]) == 1 and len(saved["tasks"]["topic"]["single"][0]) == 40
    assert result["metrics"]["sentiment"]["metric"] == "mcc"
    assert result["params"]["single_total"] > result["params"]["mtl"]
    assert result["serving"]["mtl"]["texts_per_s"] > 0 and result["serving"]["speedup"] > 0
    md = (out / "compare.md").read_text()
    assert "Δm" in md and "Positive = the multi-task model is better" in md
    assert "| topic | accuracy |" in md
    assert "1 seed (0) (one seed: no std); per-task budget `labelled`" in md
    assert "95% CI of Δ abs | verdict |" in md and "Δm = " in md
    for name in ("curves.png", "deltas.png"):
        assert _is_png(out / name), name
        import matplotlib.image

        assert matplotlib.image.imread(out / name).shape[0] > 100

    # A second compare reuses the finished runs (identical configs): same scores, no retraining.
    logs = []
    again = compare(cfg, out, seeds=1, tasks=["topic", "sentiment"], max_steps=10, serving_texts=0, log=logs.append)
    assert sum("reusing" in line for line in logs) == 3
    assert again["metrics"]["topic"]["mtl"]["mean"] == result["metrics"]["topic"]["mtl"]["mean"]
    assert again["metrics"]["topic"]["ci"] == result["metrics"]["topic"]["ci"]  # fixed resampling seed
    assert again["serving"] is None and np.isfinite(again["seconds"])

    # --records keeps each sub-run's records (no model) and the report; another work dir (another
    # session, another machine) then goes on from them without training, with the same scores.
    records = tmp_path / "records"
    timed = compare(cfg, out, seeds=1, tasks=["topic", "sentiment"], max_steps=10, serving_texts=32,
                    log=logs.append, records=records)
    assert timed["serving"]["models"] and timed["serving"]["measured_at"]  # what it timed, and when
    assert sorted(p.name for p in (records / "seed0").iterdir()) == ["mtl", "single-sentiment", "single-topic"]
    assert sorted(p.name for p in (records / "seed0" / "mtl").iterdir()) == sorted(RECORD_FILES)
    assert (records / "compare.md").exists() and (records / "compare.json").exists()
    assert len((records / "seed0" / "mtl" / "compare_result.json").read_text().splitlines()) == 1  # compact
    logs = []
    elsewhere = compare(cfg, tmp_path / "elsewhere", seeds=1, tasks=["topic", "sentiment"], max_steps=10,
                        serving_texts=32, log=logs.append, records=records)
    assert sum("reusing" in line for line in logs) == 3 and not any("trained" in line for line in logs)
    assert not (tmp_path / "elsewhere" / "seed0" / "mtl" / "model.keras").exists()
    assert elsewhere["metrics"] == again["metrics"] and elsewhere["delta_m"] == again["delta_m"]
    # no models to time: the records' measurement of the same models stands in, and the report says so
    assert elsewhere["serving"] == {**timed["serving"], "reused": True}
    assert "by an earlier invocation, on the same models" in (tmp_path / "elsewhere" / "compare.md").read_text()
    logs = []
    other = compare(cfg, tmp_path / "other", seeds=1, tasks=["topic", "sentiment"], max_steps=10,
                    serving_texts=8, log=logs.append, records=records)  # not what was timed: no table
    assert other["serving"] is None and any("serving: skipped" in line for line in logs)


def test_earlier_serving_needs_the_same_models_inputs_and_batch(tmp_path):
    from keras_mtl.compare import earlier_serving, models_digest

    runs = {0: {"mtl": {"marker": {"config": {"seed": 0}}}, "a": {"marker": {"config": {"task": "a"}}}}}
    serving = {"seed": 0, "texts": 16, "batch_size": 32, "single": {"a": {}}, "models": models_digest(runs[0], ["a"])}
    (tmp_path / "compare.json").write_text(json.dumps({"serving": serving}))
    assert earlier_serving([tmp_path / "missing", tmp_path], runs, ["a"], 16, 32) == {**serving, "reused": True}
    assert earlier_serving([tmp_path], runs, ["a"], 8, 32) is None  # other inputs
    assert earlier_serving([tmp_path], runs, ["a"], 16, 1) is None  # another batch
    retrained = {0: {**runs[0], "a": {"marker": {"config": {"task": "a", "lr": 1}}}}}
    assert earlier_serving([tmp_path], retrained, ["a"], 16, 32) is None  # a run changed since
    assert earlier_serving([tmp_path], {1: runs[0]}, ["a"], 16, 32) is None  # that seed is not compared
    old = {k: v for k, v in serving.items() if k != "models"}  # measured before the digest was recorded
    (tmp_path / "compare.json").write_text(json.dumps({"serving": old}))
    assert earlier_serving([tmp_path], runs, ["a"], 16, 32) is None


@pytest.mark.slow
def test_compare_with_a_preset(tmp_path):
    """The single-task baselines fine-tune the same pretrained encoder; two seeds are paired and averaged."""
    from keras_mtl.compare import compare

    vocab, backbone_params = save_tiny_preset(tmp_path / "preset")
    cfg = _tiny_config()
    cfg["model"] = {"preset": str(tmp_path / "preset"), "max_sequence_length": 32, "task_conditioning": "none"}
    out = tmp_path / "cmp"
    result = compare(cfg, out, seeds=2, tasks="topic,sentiment", max_steps=4, serving_texts=0, bootstrap=100,
                     log=lambda line: None)
    assert result["seeds"] == [0, 1] and result["budget"]["mode"] == "labelled"
    for run in ("mtl", "single-topic", "single-sentiment"):
        for seed in (0, 1):
            path = out / f"seed{seed}" / run
            assert (path / "vocab.txt").read_text(encoding="utf-8").splitlines() == vocab  # the preset's tokenizer
            assert str(tmp_path / "preset") in (path / "config.yaml").read_text(encoding="utf-8")
    # every model is the pretrained backbone plus its heads
    assert min([result["params"]["mtl"], *result["params"]["single"].values()]) > backbone_params
    assert result["params"]["single"]["topic"] < result["params"]["mtl"]
    for t in ("topic", "sentiment"):
        ci = result["metrics"][t]["ci"]
        assert ci["n"] == 40
        assert ci["mtl"]["point"] == pytest.approx(result["metrics"][t]["mtl"]["mean"])  # the mean over both seeds
        assert ci["single"]["point"] == pytest.approx(result["metrics"][t]["single"]["mean"])
    saved = json.loads((out / "test_predictions.json").read_text())
    assert saved["seeds"] == [0, 1] and len(saved["tasks"]["sentiment"]["mtl"]) == 2


@pytest.mark.slow
def test_compare_distill_trains_the_student_from_the_single_task_runs(tmp_path):
    import yaml

    from keras_mtl.cli import main

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(_tiny_config()), encoding="utf-8")
    out = tmp_path / "cmp"
    argv = ["compare", str(cfg), "--workdir", str(out), "--seeds", "1", "--tasks", "topic,pos", "--max-steps", "10",
            "--serving-texts", "0", "--bootstrap", "50", "--quiet"]
    assert main(argv + ["--distill"]) == 0
    result = json.loads((out / "compare.json").read_text())
    student = out / "seed0" / "distilled"
    config = yaml.safe_load((student / "config.yaml").read_text())
    assert {t["name"]: t["teacher"] for t in config["tasks"]} == {
        t: str((out / "seed0" / f"single-{t}").resolve()) for t in ("topic", "pos")}
    assert sorted(p.name for p in (student / "teachers").iterdir()) == ["teacher_pos.npz", "teacher_topic.npz"]
    d = result["distilled"]
    for t in ("topic", "pos"):
        report = json.loads((student / "report.json").read_text())
        metric = d["metrics"][t]["metric"]
        assert d["metrics"][t]["mtl"]["mean"] == pytest.approx(report["tasks"][t][metric])
        assert d["metrics"][t]["verdict"] in ("better", "worse", "not distinguishable")
    assert d["delta_m"]["value_pct"] is not None and "ci" in d["delta_m"]
    assert "## Distilled multi-task model" in (out / "compare.md").read_text()
    # without --distill the same work dir reuses every run and reports no student
    assert main(argv) == 0
    assert json.loads((out / "compare.json").read_text())["distilled"] is None


@pytest.mark.slow
def test_compare_serves_pair_tasks_with_their_pairs(tmp_path, tiny_pair_config):
    """A model whose serving_default takes text pairs is timed on pairs; a model with single-text
    and pair tasks answers them in 2 calls (serving_default, then the pair task's signature)."""
    from keras_mtl.compare import compare, serving_calls

    cfg = tiny_pair_config(tmp_path, "none", epochs=2)
    out = tmp_path / "cmp"
    result = compare(cfg, out, seeds=1, tasks="topic,nli", max_steps=6, serving_texts=16, bootstrap=20,
                     log=lambda line: None)
    s = result["serving"]
    assert s["pairs"] is True and s["texts"] == 16 and s["seed"] == 0
    assert s["mtl"]["calls"] == 2 and s["mtl"]["texts_per_s"] > 0
    assert serving_calls(out / "export" / "mtl") == [("serving_default", ["text"]), ("nli", ["text", "text_pair"])]
    assert serving_calls(out / "export" / "single-nli") == [("serving_default", ["text", "text_pair"])]
    assert s["single"]["nli"]["texts_per_s"] > 0 and s["single"]["topic"]["texts_per_s"] > 0
    md = (out / "compare.md").read_text()
    assert "16 fixed test inputs: texts, and text pairs for the pair tasks" in md
    assert "| multi-task | all 2 tasks in 2 calls (serving_default and pair-task signatures) |" in md


def test_a_recorded_run_is_reused_only_under_the_policy_its_config_gives_here(tmp_path, monkeypatch):
    """`train.precision: auto` is bfloat16 on one machine and float32 on another: a comparison
    continued on the second must retrain a run the first recorded in bfloat16, not mix them."""
    from keras_mtl import precision

    raw = {"name": "x", "tasks": [{"name": "a"}], "train": {"precision": "auto"}}
    marker = run_marker(raw, tmp_path)
    run = tmp_path / "seed0" / "mtl"
    run.mkdir(parents=True)
    for name in RECORD_FILES:
        (run / name).write_text("{}", encoding="utf-8")
    (run / "compare_run.json").write_text(json.dumps(marker), encoding="utf-8")
    (run / "run.json").write_text(json.dumps({"precision": "mixed_bfloat16"}), encoding="utf-8")
    for here, reusable in (("mixed_bfloat16", True), ("float32", False)):
        monkeypatch.setattr(precision, "resolve_precision", lambda name, *a, _here=here, **k: (
            _here if name == "auto" else name, "test"))
        assert is_finished(run, marker, tmp_path) is reusable, here
    # a run recorded before run.json named its policy trained in float32
    (run / "run.json").write_text("{}", encoding="utf-8")
    assert is_finished(run, marker, tmp_path)  # auto is float32 "here" (the last patch)
    pinned = run_marker({**raw, "train": {"precision": "mixed_bfloat16"}}, tmp_path)
    (run / "compare_run.json").write_text(json.dumps(pinned), encoding="utf-8")
    assert not is_finished(run, pinned, tmp_path)


@pytest.mark.slow
def test_auxiliary_tasks_train_in_the_multitask_run_but_have_no_baseline_and_no_delta_m(tmp_path):
    from keras_mtl.compare import compare

    raw = _tiny_config()
    raw["tasks"][1]["role"] = "auxiliary"  # sentiment helps topic and pos
    result = compare(raw, tmp_path / "cmp", seeds=1, max_steps=6, serving_texts=8, bootstrap=50, log=lambda line: None)
    # the multi-task run trained all three tasks ...
    mtl_report = json.loads((tmp_path / "cmp" / "seed0" / "mtl" / "report.json").read_text())
    assert set(mtl_report["tasks"]) == {"topic", "sentiment", "pos"}
    # ... but only the targets got single-task runs, metrics, delta-m terms and serving answers
    assert sorted(p.name for p in (tmp_path / "cmp" / "seed0").iterdir() if p.name.startswith("single-")) == [
        "single-pos", "single-topic"]
    assert result["tasks"] == ["topic", "pos"]
    assert set(result["metrics"]) == {"topic", "pos"}
    assert set(result["delta_m"]["per_task"]) == {"topic", "pos"}
    assert set(result["serving"]["single"]) == {"topic", "pos"}
    # the budget statement counts what the auxiliary task added
    aux = result["auxiliary_tasks"]
    assert aux["tasks"] == ["sentiment"]
    p = result["budget"]["per_task"]["sentiment"]["p"]
    assert aux["share_of_draws"] == pytest.approx(p)
    assert aux["steps"] == pytest.approx(p * result["mtl_plan"]["total_steps"])
    markdown = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| sentiment (auxiliary) |" in markdown and "not in Δm" in markdown
    # the labelled budget of a target counts its own labels only: the auxiliary draws are not in it
    assert result["budget"]["per_task"]["topic"]["examples"] < result["mtl_plan"]["total_steps"] * 16


def test_a_marker_leaves_out_later_fields_at_their_defaults(tmp_path):
    """A sub-run recorded before `role` existed still matches a config whose tasks are targets;
    one with an auxiliary task does not."""
    from keras_mtl.compare import run_marker

    raw = config_from_dict(_tiny_config()).raw
    assert all(t["role"] == "target" for t in raw["tasks"])
    old = json.loads(json.dumps(raw))
    for t in old["tasks"]:
        del t["role"]  # as a run recorded before the field was written
    assert run_marker(raw, tmp_path) == run_marker(old, tmp_path)
    raw["tasks"][1]["role"] = "auxiliary"
    assert run_marker(raw, tmp_path) != run_marker(old, tmp_path)
    assert run_marker(raw, tmp_path)["config"]["tasks"][1]["role"] == "auxiliary"


def test_compare_refuses_an_empty_task_list_as_export_does(tmp_path):
    from keras_mtl.compare import compare

    with pytest.raises(ConfigError, match=r"--tasks: no task named \(an empty list\)"):
        compare(_tiny_config(), tmp_path / "cmp", tasks="", log=lambda line: None)
    assert not (tmp_path / "cmp").exists()


def _assert_the_recorded_report_rebuilds(tmp_path, name, data, records_name=None, **kwargs):
    """`compare configs/<name>.yaml --records bench/results/compare/<records_name or name> ...` (kwargs:
    its options, `overrides` for `--set`) on a copy of the committed records reproduces their compare.md
    without training anything: every line but the invocation's wall time and, in a rebuild, the line
    saying where its serving table was measured."""
    import shutil

    from keras_mtl.compare import compare

    repo = Path(__file__).resolve().parents[1]
    if not (repo.parent / "shared" / "data" / data).is_dir():
        pytest.skip(f"../shared/data (the real data of configs/{name}.yaml) is not beside the repo")
    recorded = repo / "bench" / "results" / "compare" / (records_name or name)
    records = tmp_path / "records"
    shutil.copytree(recorded, records)
    logs = []
    compare(repo / "configs" / f"{name}.yaml", tmp_path / "cmp", records=records, log=logs.append, **kwargs)
    assert not any(line.startswith("  trained") for line in logs), logs

    def kept(text):
        return [line for line in text.splitlines()
                if line.strip() and not line.startswith(("Compared in ", "Measured on "))]

    assert kept((tmp_path / "cmp" / "compare.md").read_text()) == kept((recorded / "compare.md").read_text())


@pytest.mark.real_data
@pytest.mark.slow
def test_the_recorded_glue_conll_report_rebuilds_from_its_records(tmp_path):
    """The records of BENCHMARKS 1a."""
    _assert_the_recorded_report_rebuilds(tmp_path, "glue_conll", "conll2000", seeds=3, max_steps=1000)


@pytest.mark.real_data
@pytest.mark.slow
def test_the_recorded_nli_auxiliary_report_rebuilds_from_its_records(tmp_path):
    """Issue 29's acceptance: `compare configs/glue_pairs_nli_minilm.yaml --seeds 5 --finetune
    --bootstrap 10000 --records ...` (BENCHMARKS 1e), the fine-tuned column included."""
    _assert_the_recorded_report_rebuilds(tmp_path, "glue_pairs_nli_minilm", "nli_aux", seeds=5, finetune=True,
                                         bootstrap=10000)


@pytest.mark.real_data
@pytest.mark.slow
def test_the_recorded_glue_conll_minilm_report_rebuilds_from_its_records(tmp_path):
    """The 64-piece records of BENCHMARKS 1c: `compare configs/glue_conll_minilm.yaml --seeds 2
    --distill --bootstrap 100000 --records ...`."""
    _assert_the_recorded_report_rebuilds(tmp_path, "glue_conll_minilm", "conll2000", seeds=2, distill=True,
                                         bootstrap=100000)


@pytest.mark.real_data
@pytest.mark.slow
def test_the_recorded_glue_pairs_minilm_report_rebuilds_from_its_records(tmp_path):
    """The records of BENCHMARKS 1b: `compare configs/glue_pairs_minilm.yaml --seeds 5 --distill
    --bootstrap 10000 --records ...`."""
    _assert_the_recorded_report_rebuilds(tmp_path, "glue_pairs_minilm", "rte", seeds=5, distill=True,
                                         bootstrap=10000)


@pytest.mark.real_data
@pytest.mark.slow
def test_the_recorded_glue_conll_minilm_96_report_rebuilds_from_its_records(tmp_path):
    """Issue 29's glue_conll rerun at 96 word pieces (BENCHMARKS 1c): `compare
    configs/glue_conll_minilm.yaml --set model.max_sequence_length=96 --seeds 2 --distill
    --bootstrap 100000 --records ...`, the distilled section included."""
    _assert_the_recorded_report_rebuilds(tmp_path, "glue_conll_minilm", "conll2000",
                                         records_name="glue_conll_minilm_96",
                                         overrides=["model.max_sequence_length=96"], seeds=2, distill=True,
                                         bootstrap=100000)


@pytest.mark.slow
def test_compare_finetune_scores_the_multitask_run_fine_tuned_on_each_target(tmp_path):
    """--finetune: per seed and target task, the multi-task run fine-tuned on the task at its
    single-task budget, scored against the same baselines; its records rebuild it elsewhere."""
    from keras_mtl.compare import compare

    raw = _tiny_config()
    raw["tasks"][1]["role"] = "auxiliary"
    records = tmp_path / "records"
    logs = []
    result = compare(raw, tmp_path / "cmp", seeds=1, max_steps=6, serving_texts=0, bootstrap=50, finetune=True,
                     records=records, log=logs.append)
    seed = tmp_path / "cmp" / "seed0"
    assert sorted(p.name for p in seed.iterdir() if p.name.startswith("finetuned-")) == [
        "finetuned-pos", "finetuned-topic"]
    for t in ("topic", "pos"):
        run = json.loads((seed / f"finetuned-{t}" / "run.json").read_text())
        assert run["finetuned_from"]["task"] == t and run["finetuned_from"]["workdir"] == str(seed / "mtl")
        # the single-task budget
        single = json.loads((seed / f"single-{t}" / "run.json").read_text())
        assert (run["epochs"], run["steps_per_epoch"]) == (single["epochs"], single["steps_per_epoch"])
    f = result["finetuned"]
    assert set(f["metrics"]) == {"topic", "pos"} and f["models"] == 2
    assert f["delta_m"]["ci"]["low"] is not None
    markdown = (tmp_path / "cmp" / "compare.md").read_text()
    assert "## Fine-tuned per task (MT-DNN)" in markdown and "**Δm (finetuned) =" in markdown
    # rebuilt from the records alone in another work dir: nothing trains, the same report
    again = []
    rebuilt = compare(raw, tmp_path / "elsewhere", seeds=1, max_steps=6, serving_texts=0, bootstrap=50, finetune=True,
                      records=records, log=again.append)
    assert not any(line.startswith("  trained") for line in again), again
    assert rebuilt["finetuned"]["metrics"] == f["metrics"]


# ---------------------------------------------------------------------------
# the plan from the cache entry


def _shared_examples_config(root, windows):
    """Tasks that share examples, as the plan's label overlap counts them: `pos` and `chunk` (conll, two
    files with 40 sentences in common), `cls` (a TSV whose texts are some of theirs), and the pair tasks
    `nli` and `sts` (30 pairs in common); dev and test carved from train. `windows`: sentences longer than
    `max_sequence_length`, read in several rows (tagging, and `long_inputs: windows`)."""
    import random

    rng = random.Random(3)
    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu"]
    sentences = [[rng.choice(words) for _ in range(rng.randint(2, 14))] + [f"s{i}"] for i in range(120)]

    def conll(lines):
        return "\n\n".join("\n".join(f"{w} {'NN' if len(w) > 3 else 'VB'} {'B-NP' if j == 0 else 'I-NP'}"
                                     for j, w in enumerate(s)) for s in lines) + "\n"

    (root / "pos.conll").write_text(conll(sentences[:80]), encoding="utf-8")
    (root / "chunk.conll").write_text(conll(sentences[40:100]), encoding="utf-8")
    rows = [f"{' '.join(s)}\t{'yes' if i % 3 else 'no'}" for i, s in enumerate(sentences[70:120])]
    (root / "cls.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    pairs = [(" ".join(rng.choices(words, k=rng.randint(2, 6))), " ".join(rng.choices(words, k=3))) for _ in range(80)]
    for name, part in (("nli", pairs[:60]), ("sts", pairs[30:])):  # 30 pairs in common
        records = [{"a": a, "b": b, "label": "same" if i % 2 else "other", "score": round(rng.random() * 5, 2)}
                   for i, (a, b) in enumerate(part)]
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")

    def tagging(name, path, column):
        return {"name": name, "type": "tagging",
                "data": {"format": "conll", "train": str(path), "token_column": 0, "label_column": column}}

    def pair(name, type_, field):
        data = {"format": "jsonl", "train": str(root / f"{name}.jsonl"), "text_field": "a", "text_pair_field": "b",
                "label_field": field}
        return {"name": name, "type": type_, "data": data}

    model = {"vocabulary_size": 80, "max_sequence_length": 8 if windows else 32, "hidden_dim": 8, "num_layers": 1,
             "num_heads": 1, "intermediate_dim": 8, "task_conditioning": "none"}
    if windows:
        model.update(long_inputs="windows", max_windows=2)
    return {
        "name": "shared",
        "seed": 0,
        "tasks": [
            tagging("pos", root / "pos.conll", 1),
            tagging("chunk", root / "chunk.conll", 2),
            {"name": "cls", "type": "classification",
             "data": {"format": "delimited", "train": str(root / "cls.tsv"), "text_column": "sentence",
                      "label_column": "label"}},
            pair("nli", "classification", "label"),
            pair("sts", "regression", "score"),
        ],
        "splits": {"seed": 1, "dev_fraction": 0.1, "test_fraction": 0.25},
        "model": model,
        "train": {"batch_size": 8, "epochs": 2, "bucket_lengths": [8] if windows else [16, 32]},
    }


def _old_fixed_inputs(examples, n):
    """The serving inputs as the plan picked them before the cache (from the examples in memory)."""
    rng = np.random.default_rng(0)

    def pick(values):
        values = sorted(values)
        picked = [values[i] for i in rng.permutation(len(values))[:n]] if values else []
        while values and len(picked) < n:
            picked += picked[: n - len(picked)]
        return picked

    return pick({ex.text for ex in examples}), pick({ex.texts for ex in examples if ex.text_pair is not None})


@pytest.mark.parametrize("variant", ["plain", "windows", "tasks_and_overrides"])
def test_the_plan_from_the_cache_is_the_plan_from_the_examples(tmp_path, monkeypatch, variant):
    """compare's plan reads the config's cache entry, never `load_task_data`, and its numbers are those
    of the examples in memory: the training size (hence steps), the label overlap (hence the `labelled`
    budgets), the test examples (their fingerprint, the bootstrap's truth) and the serving texts."""
    from keras_mtl.compare import config_with, core
    from keras_mtl.compare.plan import entry_label_sets, label_overlap, label_sets_of
    from keras_mtl.compare.runs import labels_at
    from keras_mtl.compare.serving import fixed_inputs
    from keras_mtl.config import load_config
    from keras_mtl.data import load as load_module
    from keras_mtl.data.load import load_task_data
    from keras_mtl import prepare as prepare_module
    from keras_mtl.prepare import cache_key, plan_steps

    raw = _shared_examples_config(tmp_path, windows=variant == "windows")
    tasks, overrides = None, ()
    if variant == "tasks_and_overrides":
        tasks, overrides = "pos,cls,nli", ["splits.seed=4", "train.batch_size=4"]
    # in memory: what the plan read before the cache
    mem_raw = load_config(raw, overrides).raw
    if tasks:
        mem_raw = subset_raw(mem_raw, tasks.split(","))
    base = config_with(mem_raw, ())
    data = load_task_data(base)
    names = base.config.task_names
    train, test = data.splits["train"], data.splits["test"]
    assert len({frozenset(ex.labels) for ex in train}) >= 3 and len(test) > 10  # shared and unshared examples

    def refuse(*args, **kwargs):
        raise AssertionError("compare's plan read the data in memory")

    for module in (core, load_module, prepare_module):
        monkeypatch.setattr(module, "load_task_data", refuse)
    plan = core.comparison_plan(raw, tmp_path / "cmp", 1, tasks, None, overrides, "labelled", 10, 24, None)
    assert plan.cfg.task_names == names
    entry, _ = core.plan_data(base)  # the entry the plan wrote: the multi-task run's (the same key)
    assert entry.key == cache_key(config_with(plan.raw, ["seed=2", *plan.mtl_overrides]).config).digest
    assert entry.meta["examples"]["train"] == len(train)
    if variant == "windows":  # long texts in several rows: rows are not examples
        assert "row_example" in entry.columns and entry.rows("train") > len(train) + 20
    # read a few rows at a time (an example's rows across two reads): the same counts
    assert entry_label_sets(entry, block_rows=7) == entry_label_sets(entry) == label_sets_of(train)
    assert (plan.epochs, plan.steps_per_epoch) == plan_steps(base.config.train, len(train))
    old_overlap = {s: {t: (sum(t in ex.labels for ex in train if s in ex.labels)
                           / max(1, sum(s in ex.labels for ex in train))) for t in names} for s in names}
    assert plan.overlap == old_overlap == label_overlap(label_sets_of(train), names)
    assert any(0 < plan.overlap[s][t] < 1 for s in names for t in names)
    probabilities = [[1 / len(names)] * len(names)] * plan.epochs
    assert (task_budgets(probabilities, names, plan.steps_per_epoch, 8, plan.overlap)
            == task_budgets(probabilities, names, plan.steps_per_epoch, 8, old_overlap))
    got = list(plan.test_examples)
    assert [(e.text, e.text_pair, e.labels) for e in got] == [(e.text, e.text_pair, e.labels) for e in test]
    assert examples_fingerprint(plan.test_examples) == examples_fingerprint(test)
    wanted = {t: {i for i, e in enumerate(test) if t in e.labels and i % 2} for t in names}  # some predicted examples
    assert labels_at(plan.test_examples, wanted) == {t: {i: test[i].labels[t] for i in idx} for t, idx in wanted.items()}
    assert (plan.texts, plan.pairs) == _old_fixed_inputs(test, 24) == fixed_inputs(test, 24)
    assert len(plan.texts) == 24 and (len(plan.pairs) == 24) == ("nli" in names)
