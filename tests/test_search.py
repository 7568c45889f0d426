"""Loss-weight search with KerasTuner (keras_mtl/search.py), at tiny sizes."""

import json
from pathlib import Path

import pytest
import yaml

from keras_mtl import search as S
from keras_mtl.config import config_from_dict, load_config
from keras_mtl.errors import ConfigError, DataError


def _raw():
    """A two-task demo config small enough to train a trial in seconds."""
    return {
        "name": "tiny_search",
        "seed": 0,
        "tasks": [
            {"name": "topic", "type": "classification", "metrics": ["accuracy", "macro_f1"],
             "data": {"format": "demo", "kind": "topic", "train": 48, "dev": 16, "test": 8}},
            {"name": "sentiment", "type": "classification", "metrics": ["mcc", "accuracy"], "loss_weight": 2.0,
             "data": {"format": "demo", "kind": "sentiment", "train": 32, "dev": 16, "test": 8}},
        ],
        "model": {"vocabulary_size": 200, "max_sequence_length": 24, "hidden_dim": 16, "num_layers": 1,
                  "num_heads": 2, "intermediate_dim": 32, "task_conditioning": "none"},
        "train": {"batch_size": 8, "epochs": 1, "bucket_lengths": [24], "jit_compile": False},
    }


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(_raw(), sort_keys=False))
    return path


def test_unknown_algorithm_and_objective_list_the_valid_ones(config_file, tmp_path):
    with pytest.raises(ConfigError, match="unknown algorithm 'hyperband'; expected one of random, grid, bayesian"):
        S.search(config_file, tmp_path / "w", algorithm="hyperband", trials=1)
    with pytest.raises(ConfigError, match=r"unknown objective 'avg'; expected one of mean, min or a task name \(topic, sentiment\)"):
        S.search(config_file, tmp_path / "w", objective="avg", trials=1)
    with pytest.raises(ConfigError, match="trials must be an integer >= 1"):
        S.search(config_file, tmp_path / "w", trials=0)
    with pytest.raises(ConfigError, match="grid search needs a discrete set"):
        S.search(config_file, tmp_path / "w", algorithm="grid", weights="log")
    with pytest.raises(ConfigError, match="unknown task 'pos' to search"):
        S.search(config_file, tmp_path / "w", tasks=["pos"])
    assert not (tmp_path / "w").exists()


def test_objective_aggregates_the_primary_dev_metrics():
    config = config_from_dict(_raw()).config
    row = {"epoch": 1, "dev_topic_accuracy": 0.8, "dev_topic_macro_f1": 0.1, "dev_sentiment_mcc": 0.4, "dev_sentiment_accuracy": 0.9}
    assert S.objective_value(row, config, "mean") == pytest.approx(0.6)
    assert S.objective_value(row, config, "min") == pytest.approx(0.4)
    assert S.objective_value(row, config, "sentiment") == pytest.approx(0.4)
    with pytest.raises(DataError, match="no dev score for task"):
        S.objective_value({"dev_topic_accuracy": 0.8}, config, "mean")


def test_lower_is_better_metrics_enter_negated():
    raw = _raw()
    raw["tasks"][1] = {"name": "score", "type": "regression", "metrics": ["mse"], "data": {"format": "demo", "kind": "topic", "train": 4}}
    # Build the TaskConfig directly: the demo reader serves no regression task.
    from keras_mtl.config import ExperimentConfig

    config = ExperimentConfig.model_validate(raw)
    row = {"dev_topic_accuracy": 0.5, "dev_score_mse": 0.3}
    assert S.objective_value(row, config, "mean") == pytest.approx(0.1)
    assert S.objective_value(row, config, "score") == pytest.approx(-0.3)


def test_overrides_for_the_sampled_values():
    config = config_from_dict(_raw()).config
    sets = S.overrides_for({"loss_weight_topic": 0.25, "loss_weight_sentiment": 4.0, "temperature": 2.0}, config)
    assert sets == [
        "tasks.topic.loss_weight=0.25",
        "tasks.sentiment.loss_weight=4",
        "train.sampling=temperature",
        "train.temperature=2",
    ]


@pytest.mark.slow
def test_random_search_writes_trials_and_a_loadable_best_config(config_file, tmp_path):
    workdir = tmp_path / "search_run"
    result = S.search(config_file, workdir, algorithm="random", trials=2, objective="mean", max_steps=3, seed=1)
    assert len(result["trials"]) == 2
    assert all(t["status"] == "COMPLETED" for t in result["trials"])
    for t in result["trials"]:
        assert set(t["hyperparameters"]) == {"loss_weight_topic", "loss_weight_sentiment"}
        assert set(t["hyperparameters"].values()) <= set(S.WEIGHT_VALUES)
        run = json.loads((Path(t["workdir"]) / "run.json").read_text())
        assert "dev_topic_accuracy" in run["history"][-1]
    best = result["best"]
    assert best["objective"] == max(t["objective"] for t in result["trials"])
    assert (workdir / "search" / "trials.json").exists()
    assert (workdir / "search" / "oracle.json").exists()

    best_path = workdir / "best.yaml"
    assert result["best_config"] == str(best_path)
    loaded = load_config(best_path)
    original = load_config(config_file)
    weights = {t.name: t.loss_weight for t in loaded.config.tasks}
    assert weights == {n: best["hyperparameters"][f"loss_weight_{n}"] for n in ("topic", "sentiment")}

    def without_weights(raw):
        raw = json.loads(json.dumps(raw))
        for task in raw["tasks"]:
            task.pop("loss_weight")
        return raw

    assert without_weights(loaded.raw) == without_weights(original.raw)  # only the searched fields differ
    assert S.format_trials(result).startswith("| trial | loss_weight_sentiment | loss_weight_topic | objective (mean)")


def test_cli_arguments_parse():
    import argparse

    p = argparse.ArgumentParser()
    S.add_search_arguments(p)
    a = p.parse_args(["c.yaml", "--algorithm", "bayesian", "--trials", "3", "--objective", "min", "--weights", "0.5,1,2", "--search-temperature"])
    assert (a.algorithm, a.trials, a.objective, a.weights, a.search_temperature) == ("bayesian", 3, "min", (0.5, 1.0, 2.0), True)
    assert p.parse_args(["c.yaml", "--weights", "log"]).weights == "log"
    assert p.parse_args(["c.yaml"]).weights == S.WEIGHT_VALUES
