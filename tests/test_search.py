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


def test_choice_values_take_one_type():
    assert S.parse_choice_values("3,5") == [3, 5]
    assert S.parse_choice_values("2e-5, 5e-5") == [2e-5, 5e-5]  # YAML would read 2e-5 as a string
    assert S.parse_choice_values("3,0.5") == [3.0, 0.5]
    assert S.parse_choice_values("true,False") == [True, False]
    assert S.parse_choice_values("mean,cls") == ["mean", "cls"]
    from keras_mtl.cli import search as search_command

    assert search_command._choices_arg(["train.learning_rate=1e-3,1e-2", "model.pooling=mean,cls"]) == {
        "train.learning_rate": [1e-3, 1e-2], "model.pooling": ["mean", "cls"]}
    with pytest.raises(ConfigError, match="expected KEY=V1,V2"):
        search_command._choices_arg(["train.learning_rate"])


def test_choice_fields_become_overrides():
    config = config_from_dict(_raw()).config
    sets = S.overrides_for({"train.learning_rate": 2e-05, "train.epochs": 3, "train.jit_compile": False,
                            "loss_weight_topic": 2.0}, config)
    assert sets == ["tasks.topic.loss_weight=2", "train.learning_rate=2e-05", "train.epochs=3", "train.jit_compile=false"]


def test_choices_are_checked_before_any_trial(config_file, tmp_path):
    with pytest.raises(ConfigError, match=r"--choice train\.learning_rat=0\.1: .*learning_rat"):
        S.search(config_file, tmp_path / "w", weights=None, choices={"train.learning_rat": [0.1]})
    with pytest.raises(ConfigError, match=r"--choice train\.keep=worst: .*keep"):
        S.search(config_file, tmp_path / "w", weights=None, choices={"train.keep": ["last", "worst"]})
    with pytest.raises(ConfigError, match=r"--choice train\.keep=worst: .*keep"):
        S.search(config_file, tmp_path / "w", weights=None, choices={"train.keep": "last,worst"})  # a string, as on the command line
    with pytest.raises(ConfigError, match="nothing to search"):
        S.search(config_file, tmp_path / "w", weights=None)
    with pytest.raises(ConfigError, match="--choice tasks.topic.loss_weight is already searched"):
        S.search(config_file, tmp_path / "w", choices={"tasks.topic.loss_weight": [1.0, 2.0]})
    with pytest.raises(ConfigError, match="--choice train.temperature is already searched"):
        S.search(config_file, tmp_path / "w", weights=None, search_temperature=True,
                 choices={"train.temperature": [1.0, 2.0]})
    assert not (tmp_path / "w").exists()


def test_a_trial_is_scored_on_the_epoch_it_kept():
    from types import SimpleNamespace

    history = [{"epoch": 1, "dev_topic_accuracy": 0.9}, {"epoch": 2, "dev_topic_accuracy": 0.5}]
    assert S.scored_row(SimpleNamespace(history=history, kept_epoch=1))["dev_topic_accuracy"] == 0.9  # keep: best
    assert S.scored_row(SimpleNamespace(history=history, kept_epoch=2))["dev_topic_accuracy"] == 0.5  # keep: last
    assert S.scored_row(SimpleNamespace(history=history, kept_epoch=None))["dev_topic_accuracy"] == 0.5


@pytest.mark.slow
def test_grid_search_over_a_config_field_without_weights(config_file, tmp_path):
    result = S.search(config_file, tmp_path / "lr", algorithm="grid", trials=2, max_steps=3, weights=None,
                      choices={"train.learning_rate": [1e-3, 1e-2]})
    assert [t["status"] for t in result["trials"]] == ["COMPLETED", "COMPLETED"]
    assert sorted(t["hyperparameters"]["train.learning_rate"] for t in result["trials"]) == [1e-3, 1e-2]
    assert all(set(t["hyperparameters"]) == {"train.learning_rate"} for t in result["trials"])
    best = load_config(result["best_config"]).config
    assert best.train.learning_rate == result["best"]["hyperparameters"]["train.learning_rate"]
    assert [t.loss_weight for t in best.tasks] == [1.0, 2.0]  # the weights are not searched
    assert "train.learning_rate" in S.format_trials(result)


def test_cli_arguments_parse():
    import argparse

    from keras_mtl.cli import search as search_command

    p = argparse.ArgumentParser()
    search_command.add_arguments(p)
    a = p.parse_args(["c.yaml", "--algorithm", "bayesian", "--trials", "3", "--objective", "min", "--weights", "0.5,1,2", "--search-temperature"])
    assert (a.algorithm, a.trials, a.objective, a.weights, a.search_temperature) == ("bayesian", 3, "min", (0.5, 1.0, 2.0), True)
    assert p.parse_args(["c.yaml", "--weights", "log"]).weights == "log"
    assert p.parse_args(["c.yaml"]).weights == S.WEIGHT_VALUES
    assert p.parse_args(["c.yaml", "--weights", "none"]).weights is None
    a = p.parse_args(["c.yaml", "--choice", "train.learning_rate=2e-5,5e-5", "--choice", "train.epochs=3,5"])
    assert a.choice == ["train.learning_rate=2e-5,5e-5", "train.epochs=3,5"]
