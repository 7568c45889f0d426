"""keras_mtl.serving.predict: local predictions from an export; bad inputs are one-line errors.

Its answers on a real export are checked against the served outputs in
tests/test_end_to_end.py (test_predict_equals_the_served_outputs) and after
concurrent exports in tests/test_export_concurrent.py.

Sentence pairs and per-task signatures are checked here on FAKE exports:
`tf.Module`s with `tf.function` signatures that follow the export contract
(`serving_default` -> the single-text tasks; one signature per task, named
like it; a pair task's takes `text` and `text_pair`; keras_mtl.json with
per-task `inputs` and a top-level `serving_default`), so these tests do not
depend on the exporter. `build_fake_exports` writes them for the `fakes` fixture
of tests/serving/conftest.py (which loads this file from its path), used here and
by tests/serving/test_predict_file.py and test_predict_input.py.
"""

import json
from pathlib import Path

import pytest

from keras_mtl.errors import ModelError, ServingError


def test_predict_bad_model_dirs_are_one_line_errors(tmp_path):
    from keras_mtl.serving.predict import predict

    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "corrupt" / "1").mkdir(parents=True)
    (tmp_path / "corrupt" / "1" / "saved_model.pb").write_bytes(b"\x00garbage\n\nmore")
    cases = {
        "missing": "missing: not found",
        "empty": "empty: not a SavedModel",
        "afile": "afile: is a file, not a model directory",
        "corrupt": "1: cannot load the SavedModel",
    }
    for name, expected in cases.items():
        with pytest.raises(ModelError) as info:
            predict(tmp_path / name, ["a text"])
        assert expected in str(info.value) and "\n" not in str(info.value), str(info.value)
    for bad in (0, -3, 1.5):
        with pytest.raises(ServingError, match="batch_size must be an integer >= 1"):
            predict(tmp_path / "empty", ["a"], batch_size=bad)


def test_predict_is_the_package_level_predict():
    import keras_mtl
    from keras_mtl.serving.predict import predict

    assert keras_mtl.predict is predict


# --------------------------------------------------------------------------
# Fake exports with sentence-pair tasks and per-task signatures
# --------------------------------------------------------------------------

SINGLE_TASKS = {
    "sentiment": {"type": "classification", "classes": ["neg", "pos"]},
    "chunk": {"type": "tagging", "classes": ["O", "B-NP"]},
}
PAIR_TASKS = {
    "rte": {"type": "classification", "classes": ["entailment", "not_entailment"]},
    "stsb": {"type": "regression"},
}
MAX_WORDS = 6


def build_fake_exports(root):
    """Write fake exports under `root`; returns {kind: model base dir}.

    * "mixed": sentiment, chunk (single text) and rte, stsb (pairs): the new contract;
    * "pairs_only": rte, stsb only: serving_default takes text and text_pair;
    * "old": sentiment, chunk, serving_default only, metadata without `inputs`
      and `serving_default` (an export from before per-task signatures);
    * "old_no_meta": the same without keras_mtl.json.

    What the fake heads compute (so tests can check every answer by hand):
    sentiment "pos" iff a word is "good"; chunk "B-NP" for capitalised words;
    rte "entailment" iff the text starts with the text_pair; stsb
    words(text) + words(text_pair) / 10; num_words: the words of the text
    (and of the text_pair); truncated: num_words > 6.
    """
    import tensorflow as tf

    text_spec = tf.TensorSpec([None], tf.string, name="text")
    pair_spec = tf.TensorSpec([None], tf.string, name="text_pair")

    def words(text):
        return tf.cast(tf.strings.split(text).row_lengths(), tf.int32)

    def common(num_words):
        return {"num_words": num_words, "truncated": num_words > MAX_WORDS}

    def classification(task, probs, batch):
        """A classification task's outputs: its label, probabilities and classes."""
        classes = tf.constant({**SINGLE_TASKS, **PAIR_TASKS}[task]["classes"])
        return {
            f"{task}_label": tf.gather(classes, tf.argmax(probs, axis=1)),
            f"{task}_probabilities": probs,
            f"{task}_classes": tf.tile(classes[None], [batch, 1]),
        }

    def sentiment(text):
        split = tf.strings.split(text)
        good = tf.reduce_any(tf.equal(split, "good"), axis=1)
        probs = tf.stack([tf.where(good, 0.1, 0.8), tf.where(good, 0.9, 0.2)], axis=1)
        return classification("sentiment", probs, tf.shape(text)[0])

    def chunk(text):
        split = tf.strings.split(text)
        tags = tf.ragged.map_flat_values(
            lambda w: tf.where(tf.strings.regex_full_match(w, "[A-Z].*"), "B-NP", "O"), split)
        return {"chunk_tags": tags.to_tensor(default_value="")}

    def rte(text, text_pair):
        entails = tf.equal(tf.strings.substr(text, tf.zeros_like(tf.strings.length(text_pair)), tf.strings.length(text_pair)), text_pair)
        probs = tf.stack([tf.where(entails, 0.9, 0.3), tf.where(entails, 0.1, 0.7)], axis=1)
        return classification("rte", probs, tf.shape(text)[0])

    def stsb(text, text_pair):
        return {"stsb_value": tf.cast(words(text), tf.float32) + tf.cast(words(text_pair), tf.float32) / 10}

    class Model(tf.Module):
        @tf.function(input_signature=[text_spec])
        def single(self, text):
            return {**sentiment(text), **chunk(text), **common(words(text))}

        @tf.function(input_signature=[text_spec])
        def sentiment(self, text):
            return {**sentiment(text), **common(words(text))}

        @tf.function(input_signature=[text_spec])
        def chunk(self, text):
            return {**chunk(text), **common(words(text))}

        @tf.function(input_signature=[text_spec, pair_spec])
        def rte(self, text, text_pair):
            return {**rte(text, text_pair), **common(words(text) + words(text_pair))}

        @tf.function(input_signature=[text_spec, pair_spec])
        def stsb(self, text, text_pair):
            return {**stsb(text, text_pair), **common(words(text) + words(text_pair))}

        @tf.function(input_signature=[text_spec, pair_spec])
        def pairs(self, text, text_pair):
            return {**rte(text, text_pair), **stsb(text, text_pair),
                    **common(words(text) + words(text_pair))}

    def meta(tasks, default=None, new=True):
        out = {"name": "fake", "max_sequence_length": MAX_WORDS, "backend": "tensorflow", "tasks": {}}
        for name, spec in tasks.items():
            spec = dict(spec)
            if new:
                spec["inputs"] = ["text", "text_pair"] if name in PAIR_TASKS else ["text"]
            out["tasks"][name] = spec
        if default is not None:
            out["serving_default"] = default
        return out

    module = Model()
    layouts = {
        "mixed": ({"serving_default": module.single, "sentiment": module.sentiment, "chunk": module.chunk,
                   "rte": module.rte, "stsb": module.stsb},
                  meta({**SINGLE_TASKS, **PAIR_TASKS}, ["sentiment", "chunk"])),
        "pairs_only": ({"serving_default": module.pairs, "rte": module.rte, "stsb": module.stsb},
                       meta(PAIR_TASKS, ["rte", "stsb"])),
        "old": ({"serving_default": module.single}, meta(SINGLE_TASKS, new=False)),
        "old_no_meta": ({"serving_default": module.single}, None),
    }
    bases = {}
    for kind, (signatures, info) in layouts.items():
        version = Path(root) / kind / "1"
        tf.saved_model.save(module, str(version), signatures=signatures)
        if info is not None:
            (version / "assets.extra").mkdir()
            (version / "assets.extra" / "keras_mtl.json").write_text(json.dumps(info))
        bases[kind] = Path(root) / kind
    return bases


def sentiment_of(text):
    good = "good" in text.split()
    return {"label": "pos" if good else "neg",
            "probabilities": {"neg": 0.1 if good else 0.8, "pos": 0.9 if good else 0.2}}


def rte_of(text, pair):
    entails = text.startswith(pair)
    return {"label": "entailment" if entails else "not_entailment",
            "probabilities": {"entailment": 0.9 if entails else 0.3,
                              "not_entailment": 0.1 if entails else 0.7}}


def meta_of(*texts):
    n = sum(len(t.split()) for t in texts)
    return {"num_words": n, "truncated": n > MAX_WORDS}


# `fakes` (tests/serving/conftest.py): {kind: model base dir} of `build_fake_exports`.

TEXTS = ["the good dog ran home", "A cat sat", ""]
PAIRS = ["the good dog", "a cat", ""]


def test_serving_default_answers_the_single_text_tasks(fakes):
    from keras_mtl.serving.predict import predict

    got = predict(fakes["mixed"], TEXTS)
    assert got[0] == {"chunk": {"tags": ["O", "O", "O", "O", "O"]}, "sentiment": sentiment_of(TEXTS[0]),
                      "_meta": meta_of(TEXTS[0])}
    assert got[1]["chunk"] == {"tags": ["B-NP", "O", "O"]} and got[1]["sentiment"]["label"] == "neg"
    assert got[2] == {"chunk": {"tags": []}, "sentiment": sentiment_of(""), "_meta": meta_of("")}
    # an old export (serving_default only, no `inputs` in its metadata) answers the same
    assert predict(fakes["old"], TEXTS) == got
    assert predict(fakes["old_no_meta"], TEXTS) == got


def test_pair_task_signature_with_text_pairs(fakes):
    from keras_mtl.serving.predict import predict

    got = predict(fakes["mixed"], TEXTS, task="rte", text_pairs=PAIRS)
    assert got == [{"rte": rte_of(t, p), "_meta": meta_of(t, p)} for t, p in zip(TEXTS, PAIRS)]
    assert [g["rte"]["label"] for g in got] == ["entailment", "not_entailment", "entailment"]
    # batches keep texts and pairs aligned
    texts = [f"w{i} " * (i % 4) + f"x{i}" for i in range(23)]
    pairs = [t if i % 3 else "nope" for i, t in enumerate(texts)]
    got = predict(fakes["mixed"], texts, batch_size=4, task="stsb", text_pairs=pairs)
    assert [g["stsb"]["value"] for g in got] == [
        pytest.approx(len(t.split()) + len(p.split()) / 10) for t, p in zip(texts, pairs)]
    assert [g["rte"]["label"] for g in predict(fakes["mixed"], texts, batch_size=5, task="rte",
                                                   text_pairs=pairs)] == [
        "not_entailment" if i % 3 == 0 else "entailment" for i in range(23)]
    # bytes and an empty pair member go through, as for `text`
    got = predict(fakes["mixed"], [b"caf\xe9 au lait", "x"], task="rte", text_pairs=[b"caf\xe9", ""])
    assert [g["rte"]["label"] for g in got] == ["entailment", "entailment"]


def test_single_text_task_signature(fakes):
    from keras_mtl.serving.predict import predict

    expected = [{"sentiment": sentiment_of(t), "_meta": meta_of(t)} for t in TEXTS]
    assert predict(fakes["mixed"], TEXTS, task="sentiment") == expected
    # old exports have no per-task signatures: serving_default, that task's outputs only
    assert predict(fakes["old"], TEXTS, task="sentiment") == expected
    assert predict(fakes["old_no_meta"], TEXTS, task="sentiment") == expected
    assert predict(fakes["old"], TEXTS[:1], task="chunk") == [
        {"chunk": {"tags": ["O"] * 5}, "_meta": meta_of(TEXTS[0])}]


def test_pairs_only_model_serving_default_takes_pairs(fakes):
    from keras_mtl.serving.predict import predict

    got = predict(fakes["pairs_only"], TEXTS, text_pairs=PAIRS)
    assert [sorted(g) for g in got] == [["_meta", "rte", "stsb"]] * 3
    assert [g["rte"] for g in got] == [rte_of(t, p) for t, p in zip(TEXTS, PAIRS)]
    assert got[1]["stsb"] == {"value": pytest.approx(3.2)}
    with pytest.raises(ServingError) as info:
        predict(fakes["pairs_only"], TEXTS)
    assert str(info.value) == ("serving_default answers the sentence-pair tasks rte, stsb only: "
                               "it needs a `text_pair` for every text")


def test_pair_and_task_errors_are_one_clear_line(fakes):
    from keras_mtl.serving.predict import predict

    cases = [
        # a pair task without text_pairs names the task and says it needs text_pair
        (dict(task="rte"), "task 'rte' takes sentence pairs: it needs a `text_pair` for every text"),
        (dict(task="stsb", text_pairs=None), "task 'stsb' takes sentence pairs"),
        # pairs to a single-text task, or to serving_default of a model with single-text tasks
        (dict(task="sentiment", text_pairs=PAIRS), "text_pairs given, but task 'sentiment' takes single texts"),
        (dict(text_pairs=PAIRS), "text_pairs given, but serving_default takes single texts; the sentence-pair "
                                 "tasks (rte, stsb) have their own signatures"),
        # lengths and types of the pairs
        (dict(task="rte", text_pairs=PAIRS[:2]), "2 text_pairs for 3 texts: give one text_pair per text"),
        (dict(task="rte", text_pairs=["a", None, "b"]), "text_pair at index 1 is NoneType, not str or bytes"),
        (dict(task="rte", text_pairs="one"), "text_pairs must be a list of strings"),
        (dict(task="rte", text_pairs=[]), "no text_pairs given"),
        (dict(task=""), "task must be a task name"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ServingError) as info:
            predict(fakes["mixed"], TEXTS, **kwargs)
        assert message in str(info.value) and "\n" not in str(info.value), (kwargs, str(info.value))
    # old exports: no pair tasks at all
    with pytest.raises(ServingError, match=r"the model takes single texts only \(it has no sentence-pair task\)"):
        predict(fakes["old"], TEXTS, text_pairs=PAIRS)


def test_unknown_task_names_the_models_tasks(fakes):
    from keras_mtl.serving.predict import load_signature, predict

    for kind, names in [("mixed", "chunk, rte, sentiment, stsb"), ("old", "chunk, sentiment"),
                        ("old_no_meta", "chunk, sentiment"), ("pairs_only", "rte, stsb")]:
        with pytest.raises(ServingError) as info:
            predict(fakes[kind], ["a"], task="nope")
        assert str(info.value) == f"{fakes[kind]}: no task 'nope'; the model's tasks are {names}"
        with pytest.raises(ServingError, match="no task 'nope'"):
            load_signature(fakes[kind], task="nope")


def test_load_signature(fakes):
    import tensorflow as tf

    from keras_mtl.serving.predict import load_signature

    _, fn, version_dir = load_signature(fakes["mixed"])
    assert version_dir == fakes["mixed"] / "1"
    assert sorted(fn(text=tf.constant(["a"]))) == [
        "chunk_tags", "num_words", "sentiment_classes", "sentiment_label", "sentiment_probabilities", "truncated"]
    _, fn, _ = load_signature(fakes["mixed"], task="rte")
    out = fn(text=tf.constant(["a b", "c"]), text_pair=tf.constant(["a", "d"]))
    assert out["rte_label"].numpy().tolist() == [b"entailment", b"not_entailment"]
    assert set(out) == {"rte_label", "rte_probabilities", "rte_classes", "num_words", "truncated"}
    # an old export: serving_default narrowed to the task's outputs
    _, fn, _ = load_signature(fakes["old"], task="chunk")
    assert sorted(fn(text=tf.constant(["A b"]))) == ["chunk_tags", "num_words", "truncated"]


def test_a_signature_with_other_inputs_is_refused(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from keras_mtl.serving.predict import predict

    class Other(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="sentence")])
        def serve(self, sentence):
            return {"x_value": tf.zeros_like(sentence, tf.float32)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text"),
                                      tf.TensorSpec([None], tf.int32, name="text_pair")])
        def ints(self, text, text_pair):
            return {"x_value": tf.cast(text_pair, tf.float32)}

    module = Other()
    tf.saved_model.save(module, str(tmp_path / "m" / "1"), signatures={"serving_default": module.serve,
                                                                        "x": module.ints})
    with pytest.raises(ModelError, match=r"signature 'serving_default' takes \['sentence'\], not the string "
                                         r"inputs `text` \(and `text_pair`\)"):
        predict(tmp_path / "m", ["a"])
    with pytest.raises(ModelError, match=r"signature 'x' takes \['text', 'text_pair'\]"):
        predict(tmp_path / "m", ["a"], task="x", text_pairs=["b"])


# --------------------------------------------------------------------------
# The command line: `keras-mtl predict MODEL TEXT... [--task T] [--text-pair P ...]`
# --------------------------------------------------------------------------


def _run(capsys, *argv):
    from keras_mtl.cli import main

    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines()], captured.err


def test_cli_pairs_and_task_signatures(fakes, capsys):
    model = fakes["mixed"]
    code, out, err = _run(capsys, "predict", model, TEXTS[0], TEXTS[1], "--task", "rte",
                          "--text-pair", PAIRS[0], "--text-pair", PAIRS[1])
    assert code == 0 and err == ""
    assert out == [{"rte": rte_of(TEXTS[0], PAIRS[0]), "_meta": meta_of(TEXTS[0], PAIRS[0])},
                   {"rte": rte_of(TEXTS[1], PAIRS[1]), "_meta": meta_of(TEXTS[1], PAIRS[1])}]
    code, out, _ = _run(capsys, "predict", model, TEXTS[0], "--task", "sentiment")
    assert code == 0 and out == [{"sentiment": sentiment_of(TEXTS[0]), "_meta": meta_of(TEXTS[0])}]
    code, out, _ = _run(capsys, "predict", model, TEXTS[0])  # every single-text task, as before
    assert code == 0 and sorted(out[0]) == ["_meta", "chunk", "sentiment"]
    code, out, _ = _run(capsys, "predict", fakes["old"], TEXTS[0], "--task", "chunk")
    assert code == 0 and out == [{"chunk": {"tags": ["O"] * 5}, "_meta": meta_of(TEXTS[0])}]
    # TEXTs may also follow the options, in order
    code, out, _ = _run(capsys, "predict", model, "--task", "rte", TEXTS[0], "--text-pair", PAIRS[0], TEXTS[1],
                        "--text-pair", PAIRS[1])
    assert code == 0 and [o["rte"] for o in out] == [rte_of(TEXTS[0], PAIRS[0]), rte_of(TEXTS[1], PAIRS[1])]


@pytest.mark.parametrize("argv, message", [
    (["--task", "nope"], "no task 'nope'; the model's tasks are chunk, rte, sentiment, stsb"),
    (["--task", "rte"], "task 'rte' takes sentence pairs: it needs a `text_pair` for every text"),
    (["--task", "sentiment", "--text-pair", "x"], "text_pairs given, but task 'sentiment' takes single texts"),
    (["--text-pair", "x"], "text_pairs given, but serving_default takes single texts"),
    (["--task", "rte", "--text-pair", "x", "--text-pair", "y"], "2 --text-pair for 1 TEXT: give one --text-pair per TEXT, in order"),
])
def test_cli_pair_and_task_errors(fakes, capsys, argv, message):
    code, out, err = _run(capsys, "predict", fakes["mixed"], "the text", *argv)
    lines = err.strip().splitlines()
    assert code == 2 and out == [] and len(lines) == 1, err
    assert lines[0].startswith("keras-mtl predict: error: ") and message in lines[0], lines[0]


def test_cli_text_pair_with_input_is_an_error(fakes, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "a", "text_pair": "b"}\n')
    code, out, err = _run(capsys, "predict", fakes["mixed"], "--input", src, "--text-pair", "b")
    assert code == 2 and out == [] and "--text-pair goes with TEXT arguments" in err

