"""Work dir -> one SavedModel serving every task from raw text.

Writes the next integer version under `saved_models/<name>/` (the TF
Serving layout). Where and how a version is written (temporary directory,
the lock while the version number is chosen, `assets.extra/`, pruning) is
`keras_mtl.serving.layout`'s; this module builds what goes in it.

Signatures (`signature_name` in a TF Serving request):

* `serving_default`: `text` string [B] -> the outputs of every single-text
  task. (A model whose tasks all read sentence pairs: `text` and
  `text_pair` -> every pair task's outputs.)
* `<task>`, one per task: `text` [B] (and `text_pair` [B] for a task that
  reads pairs) -> that task's outputs only. With task conditioning the
  encoder runs once, with that task's id (`serving_default` runs it once
  per task).
* `serve_tokens`: the encoded `token_ids`/`padding_mask`[/`task_ids`]
  directly (a pair packed `[CLS] a [SEP] b [SEP]`; the model reads the
  segments off the `[SEP]`).

Outputs of a task, as its type builds them (`serving_outputs` in keras_mtl.tasks):
    <task>_label [B], <task>_probabilities [B, C], <task>_classes [B, C]   classification
    <task>_labels [B, C] ("" where not predicted), _probabilities, _classes  multilabel
    <task>_tags [B, W] (one per whitespace word, "" past each row's end)      tagging
    <task>_value [B]                                                          regression
and with them num_words [B] int32 (words of `text`), truncated [B] bool
(pieces of the text were dropped: a sentence task's cut under `long_inputs:
truncate / head_tail`, or a word longer than a whole window), windows [B]
int32 (the windows a long text was read in; 1 when it fits). Every word
gets a tag however long the text (keras_mtl.data.windows: the graph splits
a long text into overlapping windows). Every output has the batch as first
dimension (TF Serving's REST row format needs that), and every head is
float32. `export(..., tasks=[...])` (`keras-mtl export --tasks a,b`) keeps
only those tasks' heads and signatures.
"""

from keras_mtl.errors import ConfigError
from keras_mtl.serving import layout
from keras_mtl.tasks import for_task


def _serving_functions(model_fn, encoder, tasks, classes, sees_task, pair_tasks, exported, fixed_length=None):
    """{signature name: tf.function}: `serving_default` and one per exported task.

    Args:
        model_fn: the model's `serve_tokens` endpoint.
        encoder: the run's `TextEncoder`.
        tasks: every task of the run (TaskConfig), in config order (task ids).
        classes: task -> class names.
        sees_task: the model takes `task_ids` (one encoder pass per task).
        pair_tasks: names of the tasks that read sentence pairs.
        exported: names of the tasks to serve.
        fixed_length: the padded length (JAX exports are traced at one length).
    """
    import tensorflow as tf

    pad_id = encoder.pad_id
    long_inputs = encoder.windowing.long_inputs
    # The task ids are the model's (config order), also when only some tasks are exported.
    heads = {t.name: (i, for_task(t, classes[t.name])) for i, t in enumerate(tasks) if t.name in exported}

    def run_model(token_ids, names):
        """The model on rows (ragged token ids): per task, its float32 outputs [rows, ...]."""
        # JAX exports are traced at one fixed length (jax2tf cannot bound a symbolic one).
        shape = None if fixed_length is None else [None, fixed_length]
        ids = token_ids.to_tensor(default_value=pad_id, shape=shape)
        # An empty request batch ([0] texts) gives [0, 0] ids: pad to length 1
        # so that [CLS] pooling has a position to read (every text has one).
        ids = tf.pad(ids, [[0, 0], [0, tf.maximum(0, 1 - tf.shape(ids)[1])]], constant_values=pad_id)
        rows = tf.shape(ids)[0]
        inputs = {"token_ids": ids, "padding_mask": tf.not_equal(ids, pad_id)}
        if sees_task:  # one pass per task, with its id
            inputs = {k: tf.tile(v, [len(names), 1]) for k, v in inputs.items()}
            ids_of = tf.constant([heads[n][0] for n in names], tf.int32)
            inputs["task_ids"] = tf.repeat(ids_of, rows)
        out = model_fn(inputs)
        per_task = {}
        for k, name in enumerate(names):
            ys = {key: tf.cast(out[key], tf.float32) for key in heads[name][1].output_names}
            if sees_task:  # the rows run with this task's id
                ys = {key: y[k * rows : (k + 1) * rows] for key, y in ys.items()}
            per_task[name] = ys
        return per_task, tf.shape(ids)[1]

    def one_row_each(tokens, names):
        """Every text (pair) as one row, cut at max_sequence_length: the answer before windows, op for op."""
        enc = encoder.encoding(tokens)
        outputs, length = run_model(enc["token_ids"], names)
        batch = tokens["batch"]
        result = {"num_words": enc["num_words"], "truncated": enc["truncated"], "windows": tf.ones([batch], tf.int32)}
        starts = enc["word_starts"].to_tensor(default_value=-1)
        for name in names:
            result.update(heads[name][1].serving_outputs(outputs[name], batch, starts, length))
        return result

    def in_windows(tokens, names, windows_needed, cut):
        """Long texts in windows (tagging; sentence tasks under `long_inputs: windows`) and/or cut."""
        plan = encoder.serving_rows(tokens, windows_needed=windows_needed, cut=cut)
        outputs, _ = run_model(plan["token_ids"], names)
        batch = tokens["batch"]
        result = {"num_words": plan["num_words"], "truncated": plan["truncated"], "windows": plan["windows"]}
        for name in names:
            head, ys = heads[name][1], outputs[name]
            if head.token_level:  # per word: its first piece in the window(s) that read it
                at = tf.stack([plan["row"], plan["position"]], axis=1)
                per_word = {}
                for key, y in ys.items():
                    picked = tf.gather_nd(y, at)
                    if encoder.windowing.merge == "mean":
                        picked = head.merge_windows_tf(picked, plan["word"], plan["word_splits"][-1])
                    per_word[key] = tf.RaggedTensor.from_row_splits(picked, plan["word_splits"]).to_tensor()
                width = tf.shape(per_word[head.output_names[0]])[1]
                starts = tf.ragged.range(plan["num_words"]).to_tensor(default_value=-1, shape=[batch, width])
                result.update(head.serving_outputs(per_word, batch, starts, width))
            elif cut is None:  # long_inputs: windows: the mean of its windows' logits
                windowed = tf.size(plan["window_text"])
                ys = {key: head.merge_windows_tf(y[:windowed], plan["window_text"], batch) for key, y in ys.items()}
                result.update(head.serving_outputs(ys, batch, None, None))
            else:  # its cut row
                ys = {key: tf.gather(y, plan["cut_row"]) for key, y in ys.items()}
                result.update(head.serving_outputs(ys, batch, None, None))
        return result

    def serve(text, text_pair, names):
        # keras_mtl.data.windows: a text that fits is one row, answered as it always was;
        # a longer one a row per window (tagging; sentence tasks under `long_inputs:
        # windows`) and/or one cut row (`truncate`, `head_tail`).
        tokens = encoder.tokenize(text, text_pair)
        token_level = [heads[n][1].token_level for n in names]
        windows_needed = any(token_level) or (long_inputs == "windows" and not all(token_level))
        cut = None if long_inputs == "windows" or all(token_level) else long_inputs
        if not windows_needed and cut == "truncate":  # sentence tasks cut: nothing else to do
            return one_row_each(tokens, names)
        # Batches that fit take the path of before (the same ops, no window bookkeeping).
        return tf.cond(
            encoder.fits(tokens),
            lambda: one_row_each(tokens, names),
            lambda: in_windows(tokens, names, windows_needed, cut),
        )

    text_spec = tf.TensorSpec([None], tf.string, name="text")
    pair_spec = tf.TensorSpec([None], tf.string, name="text_pair")

    def single_text(names):
        @tf.function(input_signature=[text_spec])
        def fn(text):
            return serve(text, None, names)

        return fn

    def text_and_pair(names):
        @tf.function(input_signature=[text_spec, pair_spec])
        def fn(text, text_pair):
            same = tf.debugging.assert_equal(
                tf.shape(text), tf.shape(text_pair), message="text and text_pair must hold as many strings"
            )
            with tf.control_dependencies([same]):
                return serve(tf.identity(text), tf.identity(text_pair), names)

        return fn

    names = [t.name for t in tasks if t.name in exported]
    default = default_tasks(names, pair_tasks)
    functions = {"serving_default": text_and_pair(default) if default[0] in pair_tasks else single_text(default)}
    for name in names:
        functions[name] = text_and_pair([name]) if name in pair_tasks else single_text([name])
    return functions


def default_tasks(task_names, pair_tasks):
    """The tasks `serving_default` answers: the single-text ones, else (all pairs) every task."""
    singles = [n for n in task_names if n not in pair_tasks]
    return singles or list(task_names)


def _model_signature(model, sees_task, length=None):
    import tensorflow as tf

    spec = {
        "token_ids": tf.TensorSpec([None, length], tf.int32, name="token_ids"),
        "padding_mask": tf.TensorSpec([None, length], tf.bool, name="padding_mask"),
    }
    if sees_task:
        spec["task_ids"] = tf.TensorSpec([None], tf.int32, name="task_ids")
    return [spec]


def select_tasks(config, tasks=None):
    """The names of the tasks to export, in config order (`tasks`: names, or None for all)."""
    names = config.task_names
    if tasks is None:
        return list(names)
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",")]
    tasks = list(tasks)
    unknown = [t for t in tasks if t not in names]
    if unknown or not tasks or len(set(tasks)) != len(tasks):
        what = (
            f"no task {unknown[0]!r}" if unknown else "no task named" if not tasks else "a task is named twice"
        )
        raise ConfigError(f"tasks (--tasks): {what}; the run's tasks are {', '.join(names)}")
    return [n for n in names if n in tasks]


def _with_heads(model, names, tasks):
    """The model computing only the heads of tasks `names` (the same layers and weights)."""
    import keras

    keep = {}
    for task in tasks:
        if task.name in names:
            for key in for_task(task).output_names:
                keep[key] = model.output[key]
    if len(keep) == len(model.outputs):
        return model
    return keras.Model(inputs=model.input, outputs=keep, name=model.name)


def build_archive(run, model=None, tasks=None):
    """An `ExportArchive` holding the model, the tokenizer and the signatures.

    Args:
        run: a loaded work dir (`workdir.load_run`).
        model: the trained model (default: the run's).
        tasks: names of the tasks to export (default: all).
    """
    import keras

    config = run.config
    exported = select_tasks(config, tasks)
    model = _with_heads(model or run.load_model(), exported, config.tasks)
    encoder = run.encoder()
    sees_task = config.model.sees_task
    archive = keras.export.ExportArchive()
    kwargs, length = {}, None
    if keras.backend.backend() == "jax":
        kwargs["jax2tf_kwargs"] = {"native_serialization": True}
        length = config.model.max_sequence_length
    model_fn = archive.track_and_add_endpoint(
        "serve_tokens", model, input_signature=_model_signature(model, sees_task, length), **kwargs
    )
    archive.track(encoder.tokenizer)
    functions = _serving_functions(
        model_fn, encoder, config.tasks, run.classes, sees_task, config.pair_task_names, exported, length
    )
    for name, fn in functions.items():
        archive.add_endpoint(name, fn)
    return archive


def metadata(run, tasks=None):
    import keras
    import tensorflow as tf

    from keras_mtl import __version__

    exported = select_tasks(run.config, tasks)
    pairs = run.config.pair_task_names
    return {
        "name": run.config.name,
        "tasks": {
            t.name: {
                "type": t.type,
                "classes": run.classes[t.name],
                "metrics": t.metrics,
                "inputs": ["text", "text_pair"] if t.name in pairs else ["text"],  # its signature's inputs
            }
            for t in run.config.tasks
            if t.name in exported
        },
        "serving_default": default_tasks(exported, pairs),  # the tasks serving_default answers
        "max_sequence_length": run.config.model.max_sequence_length,
        "long_inputs": {  # how texts longer than a window are read (docs/long_inputs.md)
            "sentence_tasks": run.config.model.long_inputs,
            "window_stride": run.config.model.window_stride,
            "window_merge": run.config.model.window_merge,
        },
        "task_conditioning": run.config.model.task_conditioning,
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
        "keras_mtl_version": __version__,
        "needs": "import tensorflow_text (registers the tokenizer ops) before tf.saved_model.load",
    }


def export(workdir, out=None, keep=None, warmup=True, verbose=False, tasks=None):
    """Export a trained work dir as the next version under `out`.

    Args:
        workdir: a trained work dir (`keras-mtl train`).
        out: model base directory. Defaults to `saved_models/<name>`.
        keep: keep only the newest `keep` versions after writing (an int
            >= 1; checked before anything is written).
        warmup: write `assets.extra/tf_serving_warmup_requests` (needs
            `tensorflow-serving-api`; skipped with a note otherwise).
        tasks: export only these tasks (names, or one comma-separated
            string): their heads and signatures. Default: every task.

    Concurrent exports to the same `out` each get their own version: the
    SavedModels are written side by side into temporary directories, and the
    version is chosen and renamed into place under a lock on the base dir.

    Nothing is created before the model has loaded (a damaged model.keras is
    one `ModelError`). A full disk is one `NoSpace` error: the temporary
    directory and the base dir (if this export created it) are removed, the
    earlier versions stay as they were.

    Returns:
        Path of the new version directory.
    """
    from keras_mtl.disk import NoSpace, is_disk_full
    from keras_mtl.run import load_run

    keep = layout.check_keep(keep)
    if out is not None:
        layout.prepare_base(out, create=False)  # an --out naming a file or a version fails before the model loads
    run = load_run(workdir)
    tasks = select_tasks(run.config, tasks)  # an unknown task fails before anything is written
    model = run.load_model()  # a damaged model.keras fails before anything is created
    base = layout.default_base(run.config.name) if out is None else out
    created = layout.missing_dirs(base)
    base = layout.prepare_base(base)
    try:
        with layout.staging_dir(base) as tmp:  # removed on the way out
            build_archive(run, model=model, tasks=tasks).write_out(str(tmp), verbose=verbose)
            layout.write_assets_extra(tmp, metadata(run, tasks), warmup=warmup)
            return layout.publish(tmp, base, keep)
    except Exception as err:
        layout.remove_empty_dirs(created)
        if not is_disk_full(err):
            raise
    raise NoSpace(
        f"--out {base}" if out is not None else base, "the export",
        "no version was written and the earlier ones are as they were; free some space and rerun",
    )
