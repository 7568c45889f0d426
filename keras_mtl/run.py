"""A trained run reopened from its work dir: `load_run(workdir) -> Run`.

Everything that reads a finished run (evaluate, export, compare, teachers,
adapt, finetune) goes through `Run`: its config, its record (run.json), its
files (`RunFiles`), its model, and its encoder, built from the work dir
alone (vocab.txt, or the preset's tokenizer kept in tokenizer.json), so a
run trained on a preset is evaluated and exported with the preset moved away.
"""

import dataclasses
import json
import zipfile
from pathlib import Path

from keras_mtl.config import load_config
from keras_mtl.errors import ModelError
from keras_mtl.prepare import Tokenization
from keras_mtl.record import RunRecord
from keras_mtl.workdir import RunFiles


@dataclasses.dataclass
class Run:
    """A trained run loaded back from its work dir (`load_run`)."""

    files: RunFiles  # its files
    config: object  # its ExperimentConfig (config.yaml)
    info: RunRecord  # run.json
    vocabulary: list  # vocab.txt

    @property
    def classes(self):
        """task -> its class names, in head order."""
        return self.info.classes

    @property
    def task_names(self):
        return self.config.task_names

    def has_task(self, name):
        return name in self.config.task_names

    def is_export(self):
        """False: a work dir (an export is recognised by `serving.layout.is_export`)."""
        return False

    def encoder(self, max_sequence_length=None):
        """The run's `TextEncoder`, from the work dir alone: the preset's tokenizer
        kept in tokenizer.json, or the learned vocabulary (vocab.txt); a run from
        before tokenizer.json was kept loads its preset again.

        Args:
            max_sequence_length: the encoder's length cap (default: the run's).
        """
        import keras_mtl.data.tokenize as tokenize  # lazy: TensorFlow (start-up of the CLI's errors)

        model_cfg = self.config.model
        length = max_sequence_length or model_cfg.max_sequence_length
        record = self.tokenizer_record()
        if record is not None:
            tokenizer = tokenize.tokenizer_from_record(record, what=str(self.files.root / self.info.tokenizer))
            return tokenize.encoder_from_tokenizer(
                tokenizer, length, what=f"the tokenizer of {self.files.root}", model_cfg=model_cfg
            )
        if model_cfg.preset:
            from keras_mtl.pretrained import preset_encoder

            return preset_encoder(model_cfg.model_copy(update={"max_sequence_length": length}))
        return tokenize.make_encoder(self.vocabulary, model_cfg.model_copy(update={"max_sequence_length": length}))

    def tokenizer_record(self):
        """The preset's tokenizer kept in the work dir (tokenizer.json), or None (vocab.txt says all)."""
        if not self.info.tokenizer:
            return None
        path = self.files.root / self.info.tokenizer
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ModelError(f"{path}: cannot read the run's tokenizer ({type(e).__name__}: {e})") from None

    def tokenization(self):
        """How the run reads text (`prepare.Tokenization`): what a run started from it reads with."""
        return Tokenization(list(self.vocabulary), self.encoder(), self.tokenizer_record())

    def encode(self, examples, tasks=None, encoder=None):
        """`examples` encoded as the run encodes them (`EncodedSplit`), labels of `tasks`
        (default: the run's tasks) in the run's class order."""
        from keras_mtl.data.pipeline import encode_split  # lazy: TensorFlow

        tasks = self.config.tasks if tasks is None else tasks
        return encode_split(examples, encoder or self.encoder(), tasks, self.classes)

    def load_model(self):
        """The trained network (`model.keras`).

        The one place a work dir's model is loaded (evaluate, export, teachers,
        compare, adapt): a damaged file (truncated, overwritten, failing its
        checksums) is a `ModelError` naming it, not Keras' "File not found".
        """
        import keras  # lazy, as below: TensorFlow (start-up of the CLI's errors)
        import keras_hub  # noqa: F401  (registers pretrained backbones)

        import keras_mtl.layers  # noqa: F401  (registers the custom layers)

        path = self.files.model
        try:
            return keras.saving.load_model(path, compile=False)
        except Exception:
            if not path.is_file():
                raise ModelError(
                    f"{path}: not found; run `keras-mtl train CONFIG --workdir {self.files.root}`"
                ) from None
            problem = model_file_problem(path)
            if problem is None:
                raise  # an intact archive that does not load: not the user's file's fault
        raise ModelError(
            f"{path}: the model file is damaged ({problem}); retrain the run "
            f"(keras-mtl train CONFIG --workdir {self.files.root}) or restore model.keras from a copy"
        )


def model_file_problem(path):
    """What is wrong with a `.keras` archive (a zip), or None when it is intact."""
    try:
        if not zipfile.is_zipfile(path):
            return f"not a complete .keras archive, {Path(path).stat().st_size} bytes: truncated or overwritten"
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [n for n in ("config.json", "model.weights.h5") if n not in names]
            if missing:
                return f"the archive lacks {', '.join(missing)}"
            bad = archive.testzip()
            if bad is not None:
                return f"{bad} in it fails its checksum"
    except (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, ValueError) as err:
        return " ".join(f"{type(err).__name__}: {err}".split())[:200]
    return None


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
    from keras_mtl.data.tokenize import load_vocabulary  # lazy: TensorFlow

    loaded = load_config(files.config)
    return Run(files, loaded.config, RunRecord.read(files.run), load_vocabulary(files.vocab))
