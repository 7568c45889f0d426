"""Training callbacks: per-task dev metrics, the metrics CSV, NaN guard."""

import csv
import math
import os
import time

import keras

from keras_mtl.evaluate import evaluate_split


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
        with open(self.csv_path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.history)


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
