"""Plain helper functions shared by test modules: `from helpers import ...`.

Test modules run with `--import-mode=importlib` and cannot import
`conftest.py`; `conftest.py` puts this folder on `sys.path` so that they can
import this module (fixtures stay in `conftest.py`).
"""

import importlib.util
from pathlib import Path

import pytest

# ../shared/data beside the repo root: real data, absent on most machines.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SHARED_DATA_MISSING = "../shared/data not found: real-data tests need the shared data beside the repo"


def import_path(path, name):
    """The Python file at `path` imported as a module named `name` (a test module is not
    importable by its name): e.g. to share another test module's fakes."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_all(fmt, source, task, task_type, split="train", **options):
    """Every example the `fmt` reader reads from `source` for the task (a reader streams: take the whole stream)."""
    from keras_mtl.data.readers import ReadRequest, get_reader

    reader = get_reader(fmt)
    request = ReadRequest(
        source=source,
        options=reader.options(**options),
        task_name=task,
        task_type=task_type,
        split=split,
    )
    return list(reader.read(request))


def write_text(folder, text, name):
    """`text` written (UTF-8) to `folder / name`; the path."""
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def shared_data(*parts, missing=SHARED_DATA_MISSING):
    """The path of `../shared/data/<parts>`; skips the test (saying `missing`) where it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(missing)
    return path


def examples_or_data_error(read, source, *args, where=None, **options):
    """`read(source, *args, **options)`: its examples, or None where it raised a DataError.

    The DataError's message must start with `where` (a string or a tuple of
    them; by default the source): a reader on any input, fuzzed, either reads
    it or says which file is wrong.
    """
    from keras_mtl.errors import DataError

    try:
        return read(source, *args, **options)
    except DataError as e:
        assert str(e).startswith(str(source) if where is None else where)
        return None


def check_word_tags(examples, task):
    """Examples of a tagging task: some, each with one non-empty string tag per word of its text."""
    from keras_mtl.data.example import Example

    assert examples
    for ex in examples:
        assert isinstance(ex, Example)
        tags = ex.labels[task]
        assert isinstance(tags, tuple) and all(isinstance(t, str) and t for t in tags)
        assert len(ex.text.split()) == len(tags)


_CLI_TINY_YAML = """\
name: {name}
{seed}tasks:
  - name: topic
    type: classification
{metrics}    data: {{format: demo, kind: topic, train: {topic[0]}, dev: {topic[1]}, test: {topic[2]}}}
  - name: pos
    type: tagging
    data: {{format: demo, kind: pos, train: 24, dev: 8, test: 8}}
model:
  vocabulary_size: {vocabulary_size}
  max_sequence_length: 16
  hidden_dim: 16
  num_layers: 1
  num_heads: 2
  intermediate_dim: 32
  task_conditioning: none
train:
  batch_size: 8
  epochs: {epochs}
  bucket_lengths: [8]
  jit_compile: false
"""


def cli_tiny_yaml(name, *, seed=None, metrics=None, topic=(24, 8, 8), vocabulary_size=120, epochs=1):
    """The config file text of a tiny demo-data run for the command-line tests: tasks `topic`
    (classification; `topic`: its train, dev and test sizes) and `pos` (tagging; 24, 8, 8),
    16-wide, one layer, no task conditioning."""
    return _CLI_TINY_YAML.format(
        name=name,
        seed="" if seed is None else f"seed: {seed}\n",
        metrics="" if metrics is None else f"    metrics: [{', '.join(metrics)}]\n",
        topic=topic,
        vocabulary_size=vocabulary_size,
        epochs=epochs,
    )


def save_tiny_preset(path):
    """A local keras-hub preset at `path`: a random 1-layer BertBackbone (seeded) and a
    BertTokenizer whose vocabulary holds every word of the demo grammar.

    Returns (the vocabulary, the backbone's parameter count).
    """
    import keras
    import keras_hub

    from keras_mtl.data.readers import demo

    keras.utils.set_random_seed(0)
    words = set(demo.DETERMINERS) | set(demo.ADVERBS) | set(demo.PREPOSITIONS) | {"."}
    for nouns, verbs in demo.TOPICS.values():
        words |= set(nouns) | set(verbs)
    for adjectives in demo.ADJECTIVES.values():
        words |= set(adjectives)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words)]
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(vocab), num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=32
    )
    backbone.save_to_preset(str(path))
    keras_hub.models.BertTokenizer(vocabulary=vocab, lowercase=True).save_to_preset(str(path))
    return vocab, int(backbone.count_params())


def random_hidden(shape=(2, 5, 8), seed=0):
    """Seeded standard-normal float32 hidden states (a layer's input), (batch, length, width)."""
    import numpy as np

    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def tiny_config(tasks=("topic",), conditioning="none", name="dist", **train):
    """A tiny demo-data config whose runs are compared across device layouts and processes
    (tests/test_distribute.py, tests/test_multihost.py); `train` overrides train fields."""
    demo = {
        "topic": {"name": "topic", "type": "classification", "metrics": ["accuracy"],
                  "data": {"format": "demo", "kind": "topic", "train": 96, "dev": 8, "test": 0}},
        "pos": {"name": "pos", "type": "tagging", "metrics": ["token_accuracy"], "loss_weight": 0.5,
                "data": {"format": "demo", "kind": "pos", "train": 48, "dev": 8, "test": 0}},
    }
    return {
        "name": name,
        "seed": 0,
        "tasks": [demo[t] for t in tasks],
        "model": {"vocabulary_size": 200, "max_sequence_length": 16, "hidden_dim": 16, "num_layers": 1,
                  "num_heads": 2, "intermediate_dim": 32, "dropout": 0.0, "task_conditioning": conditioning},
        # float32 unless a test asks: these tests compare the numbers of two device layouts, and
        # `auto` (the default) is bfloat16 on some CPUs, whose rounding differs between the layouts
        "train": {"batch_size": 8, "epochs": 2, "steps_per_epoch": 2, "learning_rate": 0.01,
                  "bucket_lengths": [16], "eval_batch_size": 64, "precision": "float32", **train},
    }
