"""keras-mtl compare: delta_m, the per-task budgets, and one tiny end-to-end comparison."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from keras_mtl.compare import (
    NEAR_ZERO,
    capped_plan,
    delta_m,
    higher_is_better,
    mean_std,
    subset_raw,
    task_budgets,
)
from keras_mtl.errors import ConfigError

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


def test_compare_bad_tasks_leaves_no_work_dir(tmp_path):
    from keras_mtl.compare import compare

    root = tmp_path / "cmp"
    with pytest.raises(ConfigError, match="no task named 'zz'"):
        compare(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml", workdir=root, tasks="topic,zz")
    assert not root.exists()


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

    from keras_mtl.compare import compare, main

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(_tiny_config()), encoding="utf-8")
    out = tmp_path / "cmp"
    status = main([
        str(cfg), "--workdir", str(out), "--seeds", "1", "--tasks", "topic,sentiment",
        "--max-steps", "10", "--serving-texts", "32", "--quiet",
    ])
    assert status == 0
    result = json.loads((out / "compare.json").read_text())
    assert result["tasks"] == ["topic", "sentiment"]  # --tasks: pos is not trained at all
    assert not (out / "seed0" / "single-pos").exists()
    assert result["mtl_plan"]["total_steps"] <= 10 and result["mtl_plan"]["epochs"] == 2
    budgets = result["budget"]["per_task"]
    assert abs(sum(b["steps"] for b in budgets.values()) - result["mtl_plan"]["total_steps"]) <= 1
    for t in ("topic", "sentiment"):
        assert 0.0 <= result["metrics"][t]["mtl"]["mean"] <= 1.0
        assert result["metrics"][t]["single"]["mean"] is not None
        assert len(result["curves"][t]["mtl"]["epochs"]) == 2
        assert result["serving"]["single"][t]["texts_per_s"] > 0
    assert result["metrics"]["sentiment"]["metric"] == "mcc"
    assert result["params"]["single_total"] > result["params"]["mtl"]
    assert result["serving"]["mtl"]["texts_per_s"] > 0 and result["serving"]["speedup"] > 0
    md = (out / "compare.md").read_text()
    assert "Δm" in md and "Positive = the multi-task model is better" in md
    assert "| topic | accuracy |" in md
    for name in ("curves.png", "deltas.png"):
        assert _is_png(out / name), name
        import matplotlib.image

        assert matplotlib.image.imread(out / name).shape[0] > 100

    # A second compare reuses the finished runs (identical configs): same scores, no retraining.
    logs = []
    again = compare(cfg, out, tasks=["topic", "sentiment"], max_steps=10, serving_texts=0, log=logs.append)
    assert sum("reusing" in line for line in logs) == 3
    assert again["metrics"]["topic"]["mtl"]["mean"] == result["metrics"]["topic"]["mtl"]["mean"]
    assert again["serving"] is None and np.isfinite(again["seconds"])
