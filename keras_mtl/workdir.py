"""The files of a training run, and loading them back.

    WORKDIR/
      config.yaml      the validated config (data paths absolute)
      vocab.txt        the WordPiece vocabulary (learned from train)
      run.json         classes per task, backend, versions, sampling, timings
      model.keras      the trained model
      metrics.csv      per-epoch train losses and per-task dev metrics
      logs/            TensorBoard
      backup/          BackupAndRestore state (removed when training ends)
      report.json, report.md   per-task test metrics
"""

import dataclasses
import json
from pathlib import Path

import yaml

from keras_mtl.errors import ModelError


@dataclasses.dataclass
class RunFiles:
    root: Path

    @property
    def config(self):
        return self.root / "config.yaml"

    @property
    def vocab(self):
        return self.root / "vocab.txt"

    @property
    def run(self):
        return self.root / "run.json"

    @property
    def model(self):
        return self.root / "model.keras"

    @property
    def metrics_csv(self):
        return self.root / "metrics.csv"

    @property
    def logs(self):
        return self.root / "logs"

    @property
    def backup(self):
        return self.root / "backup"

    @property
    def report_json(self):
        return self.root / "report.json"

    @property
    def report_md(self):
        return self.root / "report.md"


def default_workdir(config):
    return Path("runs") / config.name


def write_json(path, data):
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def save_config(files, loaded):
    files.config.write_text(yaml.safe_dump(loaded.raw, sort_keys=False), encoding="utf-8")


@dataclasses.dataclass
class Run:
    """A trained run loaded back from its work dir."""

    files: RunFiles
    config: object  # ExperimentConfig
    info: dict  # run.json
    vocabulary: list

    @property
    def classes(self):
        return self.info["classes"]

    def load_model(self):
        import keras
        import keras_hub  # noqa: F401  (registers pretrained backbones)

        import keras_mtl.layers  # noqa: F401  (registers custom layers)

        return keras.saving.load_model(self.files.model, compile=False)


def load_run(workdir) -> Run:
    """Load a finished run, or say clearly what is missing."""
    files = RunFiles(Path(workdir))
    if not files.root.is_dir():
        raise ModelError(f"{files.root}: work dir not found")
    missing = [p.name for p in (files.config, files.vocab, files.run, files.model) if not p.exists()]
    if missing:
        raise ModelError(
            f"{files.root}: no trained model here (missing {', '.join(missing)}); "
            f"run `keras-mtl train CONFIG --workdir {files.root}` first"
        )
    from keras_mtl.config import load_config
    from keras_mtl.data.tokenize import load_vocabulary

    loaded = load_config(files.config)
    info = json.loads(files.run.read_text(encoding="utf-8"))
    return Run(files, loaded.config, info, load_vocabulary(files.vocab))
