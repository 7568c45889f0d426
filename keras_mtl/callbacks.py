"""Training callbacks: per-task dev metrics, the metrics CSV, NaN guard, the
best epoch's weights (`train.keep: best`), the per-epoch backup a killed run
resumes from."""

import base64
import csv
import json
import math
import os
import time
from pathlib import Path

import keras
import numpy as np

from keras_mtl.evaluation import evaluate_split


class PerTaskEvaluation(keras.callbacks.Callback):
    """Scores every task on the dev split at each epoch end.

    Adds `dev_<task>_<metric>` to the epoch logs (so TensorBoard and the
    history see them), appends a row to `metrics.csv` with the epoch's
    per-task training losses and dev metrics, and prints one line.

    Args:
        config: ExperimentConfig.
        dev: EncodedSplit of the dev examples.
        classes: dict task -> class names.
        csv_path: path of the CSV to append to.
        pad_id: int. Padding token id.
        extra_logs: callable returning a dict of extra values to log per
            epoch (learned loss weights, sampling probabilities).
    """

    def __init__(self, config, dev, classes, csv_path, pad_id=0, extra_logs=None, verbose=1):
        super().__init__()
        self.config = config
        self.dev = dev
        self.classes = classes
        self.csv_path = csv_path
        self.pad_id = pad_id
        self.extra_logs = extra_logs
        self.verbose = verbose
        self.history = []
        self._epoch_start = None

    def on_train_begin(self, logs=None):
        # After a restart (BackupAndRestore) keep the rows of the finished epochs.
        self.history = []
        if self.csv_path and os.path.exists(self.csv_path):
            with open(self.csv_path, newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    self.history.append({k: _number(v) for k, v in row.items() if v != ""})

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.time()
        self.history = [r for r in self.history if int(r.get("epoch", 0)) <= epoch]

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        row = {"epoch": epoch + 1, "seconds": round(time.time() - (self._epoch_start or time.time()), 2)}
        for task in self.config.tasks:
            if f"{task.name}_loss" in logs:
                row[f"train_{task.name}_loss"] = float(logs[f"{task.name}_loss"])
        if "loss" in logs:
            row["train_loss"] = float(logs["loss"])
        for key, value in logs.items():  # loss weights in force (LossWeightLogger)
            if key.startswith("lambda_"):
                row[key] = float(value)
        if len(self.dev):
            scores = evaluate_split(self.model, self.dev, self.config, self.classes, self.pad_id)
            for task, values in scores.items():
                for metric, value in values.items():
                    if value is not None:
                        row[f"dev_{task}_{metric}"] = value
                        logs[f"dev_{task}_{metric}"] = value
        if self.extra_logs is not None:
            for key, value in self.extra_logs(epoch).items():
                row[key] = value
                logs[key] = value
        self.history.append(row)
        self._write_csv()
        if self.verbose:
            shown = "  ".join(
                f"{k[4:]}={100 * v:.2f}" for k, v in row.items() if k.startswith("dev_")
            )
            print(f"epoch {row['epoch']}: train_loss={row.get('train_loss', float('nan')):.4f}  {shown}", flush=True)

    def _write_csv(self):
        fields = []
        for row in self.history:
            fields += [k for k in row if k not in fields]
        tmp = f"{self.csv_path}.tmp"  # replaced in one step: a kill never leaves half a file
        try:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(self.history)
        except BaseException:  # a full disk: no half-written .tmp left behind
            Path(tmp).unlink(missing_ok=True)
            raise
        os.replace(tmp, self.csv_path)


def dev_score(config, row):
    """The dev score of an epoch: the mean over the target tasks (`role:
    target`; auxiliary tasks only help them) of each task's primary dev
    metric (`metrics[0]`), negated where lower is better (mse), so that a
    higher score is better; over the tasks scored on dev.

    Args:
        config: ExperimentConfig.
        row: the epoch's logs or `metrics.csv` row (`dev_<task>_<metric>`).

    Returns:
        float, or None when no task has a dev score.
    """
    from keras_mtl.metrics import METRICS

    values = []
    for task in config.tasks:
        if task.role != "target":
            continue
        metric = task.primary_metric
        value = row.get(f"dev_{task.name}_{metric}")
        if value is None or value == "":
            continue
        value = float(value)
        values.append(value if METRICS[metric].higher_is_better else -value)
    return sum(values) / len(values) if values else None


class KeepBest(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the best dev score (`dev_score`).

    Reads the epoch's dev metrics from the logs, so it runs after
    `PerTaskEvaluation`, and before `RunBackup(keep_best=this)`, which
    commits the best weights (`best-<epoch>.weights.npz`) and score with the
    epoch's backup, in the same atomic step; at `fit` start a resumed run
    reads them back from there. The first of equal scores wins; a NaN score
    never does. After `fit`, `restore()` puts the best weights into the
    network.

    Args:
        config: ExperimentConfig.
        network: the model whose weights are kept (default: the fitted model).
        directory: the `RunBackup` directory to resume from (None: no resume).
    """

    def __init__(self, config, network=None, directory=None):
        super().__init__()
        self.config = config
        self.network = network
        self.directory = Path(directory) if directory is not None else None
        self.best_epoch = None  # 1-based
        self.best_score = None
        self.best_weights = None  # host copies of `network.get_weights()`

    @property
    def _network(self):
        return self.network if self.network is not None else self.model

    def on_train_begin(self, logs=None):
        self.best_epoch = self.best_score = self.best_weights = None
        state = read_backup_state(self.directory) if self.directory is not None else None
        best = (state or {}).get("best")
        if best:
            self.best_weights = load_weights_file(self.directory / best["weights"])
            self.best_epoch, self.best_score = int(best["epoch"]), float(best["score"])

    def on_epoch_end(self, epoch, logs=None):
        score = dev_score(self.config, logs or {})
        if score is None or not math.isfinite(score):
            return
        if self.best_score is None or score > self.best_score:
            # Copies: JAX may donate (reuse) the buffers of the variables in the next step.
            self.best_weights = [np.array(w, copy=True) for w in self._network.get_weights()]
            self.best_epoch, self.best_score = epoch + 1, score

    def save(self, path):
        """Write the best weights to `path` (whole or not at all)."""
        save_weights_file(self.best_weights, path)

    def restore(self):
        """Set the network's weights to the best epoch's; returns that epoch (None: no epoch had a dev score)."""
        if self.best_weights is None:
            return None
        self._network.set_weights(self.best_weights)
        return self.best_epoch


def save_weights_file(weights, path):
    """A list of arrays (`get_weights()`) to an `.npz` file, atomically (`.tmp` + `os.replace`)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, *weights)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:  # a full disk: no half-written .tmp left behind
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def load_weights_file(path):
    """The list of arrays `save_weights_file` wrote (for `set_weights()`)."""
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


class TaskNaNGuard(keras.callbacks.Callback):
    """Stops training at the first NaN/inf loss and names the task(s).

    After `fit`, `self.failure` holds the message (None if all went well).
    """

    def __init__(self, task_names):
        super().__init__()
        self.task_names = list(task_names)
        self.failure = None

    def on_train_batch_end(self, batch, logs=None):
        if not logs or self.failure:
            return
        bad = [t for t in self.task_names if _not_finite(logs.get(f"{t}_loss"))]
        if bad or _not_finite(logs.get("loss")):
            which = f"task {bad[0]!r}" + (f" (also {', '.join(bad[1:])})" if len(bad) > 1 else "") if bad else "the total loss"
            self.failure = (
                f"the loss of {which} became NaN/inf at step {batch + 1} of the epoch; training stopped. "
                "Lower the learning rate, check that task's labels (regression targets far from 0?), "
                "or use train.precision: float32."
            )
            self.model.stop_training = True


class RunBackup(keras.callbacks.Callback):
    """Per-epoch training state that a killed run resumes from, exactly.

    Does what `keras.callbacks.BackupAndRestore` does (weights and optimizer
    state after each epoch, restored at `fit` start, `initial_epoch` set), plus:

    * the states of the model's `keras.random.SeedGenerator`s (Dropout layers,
      keras-hub layers, the RLW sampler). `save_weights` leaves them out, so
      after a `BackupAndRestore` resume every Dropout layer draws its masks
      from the seed it started epoch 1 with, and a resumed run with dropout
      differs from an uninterrupted one. On the torch backend an unseeded
      Dropout draws from torch's global generator instead: its state is
      saved too, and restored at the first batch (creating the data loader's
      iterator at `fit` start draws from it);
    * one atomic commit per epoch: the weights go to a new
      `epoch-<n>.weights.h5`, then `training_metadata.json` (epoch, weights
      file, seed states) replaces the previous one with `os.replace`, then
      the older weights file is removed. A kill at any point leaves a
      consistent (epoch, weights, seeds) triple;
    * with `keep_best` (a `KeepBest` callback that runs before this one):
      the best epoch so far, its dev score and weights
      (`best-<epoch>.weights.npz`, written when that epoch ends) in the same
      commit, so a resumed run keeps the best of the epochs before the kill;
    * a full disk stops training at the first checkpoint that does not fit,
      with a `NoSpace` error naming the file; the previous epoch's commit
      stays. HDF5 crashes (a segfault, after hundreds of lines of errors)
      once a write into its file fails, so the checkpoint's size
      (`checkpoint_bytes`) is reserved first (`keras_mtl.disk.reserve_space`),
      and a write that fails anyway is cleaned up by
      `keras_mtl.disk.write_or_no_space`.

    The directory is removed by `train()` once the run is complete, not here.
    """

    METADATA = "training_metadata.json"

    def __init__(self, directory, keep_best=None):
        super().__init__()
        self.directory = Path(directory)
        self.keep_best = keep_best
        self._global_rng = None

    def on_train_begin(self, logs=None):
        state = read_backup_state(self.directory)
        if state is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)  # its variables must exist to load them
        self.model.load_weights(str(self.directory / state["weights"]))
        generators = seed_generators(self.model)
        saved = state.get("seed_states", [])
        if len(saved) != len(generators):
            from keras_mtl.errors import ModelError

            raise ModelError(
                f"{self.directory}: the backup holds {len(saved)} random seed states, the model has "
                f"{len(generators)}: it was written by another model; pass --fresh (or delete {self.directory.parent}) "
                "to train from scratch"
            )
        for generator, value in zip(generators, saved):
            generator.state.assign(keras.ops.convert_to_tensor(value, dtype=generator.state.dtype))
        self._global_rng = state.get("global_rng")  # set once the data iterator exists
        self.model._initial_epoch = int(state["epoch"])

    def on_train_batch_begin(self, batch, logs=None):
        if self._global_rng is not None:
            _set_global_rng_state(self._global_rng)
            self._global_rng = None

    def on_epoch_end(self, epoch, logs=None):
        from keras_mtl.disk import reserve_space, write_or_no_space

        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch + 1}.weights.h5"
        path = self.directory / name
        what = f"the checkpoint of epoch {epoch + 1}"
        reserve_space(path, checkpoint_bytes(self.model), what)  # HDF5 must never find the disk full
        write_or_no_space(path, lambda: self.model.save_weights(str(path), overwrite=True), what)
        state = {
            "epoch": epoch + 1,
            "weights": name,
            "seed_states": [
                [int(x) for x in keras.ops.convert_to_numpy(g.state.value).reshape(-1)] for g in seed_generators(self.model)
            ],
            "global_rng": _global_rng_state(),
        }
        best = self.keep_best
        if best is not None and best.best_epoch is not None:
            best_name = f"best-{best.best_epoch}.weights.npz"
            if best.best_epoch == epoch + 1 or not (self.directory / best_name).is_file():
                best.save(self.directory / best_name)  # a new best (a committed one stays as it is)
            state["best"] = {"epoch": best.best_epoch, "score": best.best_score, "weights": best_name}
        tmp = self.directory / (self.METADATA + ".tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(json.dumps(state))
                f.flush()
                os.fsync(f.fileno())
        except BaseException:  # a full disk: the new weights file is not committed, and goes
            tmp.unlink(missing_ok=True)
            path.unlink(missing_ok=True)
            raise
        os.replace(tmp, self.directory / self.METADATA)
        for old in self.directory.glob("epoch-*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)
        for old in self.directory.glob("best-*.weights.npz"):
            if old.name != state.get("best", {}).get("weights"):
                old.unlink(missing_ok=True)


def checkpoint_bytes(model):
    """An upper bound of the size of `model.save_weights(...)`: its weights and
    optimizer variables, plus HDF5's overhead (about 1 KiB per variable
    measured; 2 KiB counted, and 64 KiB for the file)."""
    variables = list(model.weights)
    if getattr(model, "optimizer", None) is not None:
        variables += list(model.optimizer.variables)
    total = 64 * 1024
    for v in variables:
        try:
            itemsize = np.dtype(v.dtype).itemsize
        except TypeError:  # bfloat16 and the like: count 8 bytes
            itemsize = 8
        total += int(np.prod(v.shape, dtype=np.int64)) * itemsize + 2048
    return total


def read_backup_state(directory):
    """The committed state of a `RunBackup` directory: a dict with `epoch`,
    `weights` and `seed_states` (and `best`: `epoch`, `score`, `weights`, with
    `KeepBest`), or None when no epoch was finished."""
    path = Path(directory) / RunBackup.METADATA
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        epoch = int(state["epoch"])
        best = state.get("best")
        if best is not None:
            int(best["epoch"]), float(best["score"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if epoch < 1 or not (Path(directory) / str(state.get("weights", ""))).is_file():
        return None
    if best is not None and not (Path(directory) / str(best.get("weights", ""))).is_file():
        return None
    return state


def _global_rng_state():
    """torch's global generator states (base64), which unseeded torch Dropout
    draws from; None on the other backends (every random op of a Keras model
    there goes through a `SeedGenerator`)."""
    if keras.backend.backend() != "torch":
        return None

    import torch

    def encode(tensor):
        return base64.b64encode(tensor.cpu().numpy().tobytes()).decode("ascii")

    state = {"cpu": encode(torch.get_rng_state())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [encode(s) for s in torch.cuda.get_rng_state_all()]
    return state


def _set_global_rng_state(state):
    if not state or keras.backend.backend() != "torch":
        return

    import numpy as np
    import torch

    def decode(text):
        return torch.from_numpy(np.frombuffer(base64.b64decode(text), dtype=np.uint8).copy())

    torch.set_rng_state(decode(state["cpu"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([decode(s) for s in state["cuda"]])


def seed_generators(model):
    """The `SeedGenerator`s of a model and its layers, in a fixed order (the
    layer-tracking order, which a rebuilt identical model reproduces)."""
    found, seen = [], set()
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for generator in getattr(layer, "_seed_generators", ()):
            if id(generator) not in seen:
                seen.add(id(generator))
                found.append(generator)
    return found


def _number(text):
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text else value


def _not_finite(value):
    if value is None:
        return False
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
