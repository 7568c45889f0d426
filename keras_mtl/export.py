"""Work dir -> one SavedModel serving every task from raw text.

Writes the next integer version under `saved_models/<name>/` (the TF
Serving layout). Where and how a version is written (temporary directory,
the lock while the version number is chosen, `assets.extra/`, pruning) is
`keras_mtl.serving.layout`'s; this module builds what goes in it.

Signature `serving_default`: `text` string [B] -> each task's outputs, as
its type builds them (`serving_outputs` in keras_mtl.tasks):
    <task>_label [B], <task>_probabilities [B, C], <task>_classes [B, C]   classification
    <task>_labels [B, C] ("" where not predicted), _probabilities, _classes  multilabel
    <task>_tags [B, W] (one per whitespace word, "" past each row's end)      tagging
    <task>_value [B]                                                          regression
    num_words [B] int32, truncated [B] bool (text cut at max_sequence_length)
Every output has the batch as first dimension (TF Serving's REST row format
needs that), and every head is float32. A second signature, `serve_tokens`,
takes the encoded `token_ids`/`padding_mask`[/`task_ids`] directly.
"""

from keras_mtl.serving import layout
from keras_mtl.tasks import for_task


def _build_serving_fn(model_fn, encoder, tasks, classes, sees_task, fixed_length=None):
    import tensorflow as tf

    pad_id = encoder.pad_id
    heads = [for_task(t, classes[t.name]) for t in tasks]
    num_tasks = len(tasks)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serving_default(text):
        enc = encoder(text)
        # JAX exports are traced at one fixed length (jax2tf cannot bound a symbolic one).
        shape = None if fixed_length is None else [None, fixed_length]
        ids = enc["token_ids"].to_tensor(default_value=pad_id, shape=shape)
        # An empty request batch ([0] texts) gives [0, 0] ids: pad to length 1
        # so that [CLS] pooling has a position to read (every text has one).
        ids = tf.pad(ids, [[0, 0], [0, tf.maximum(0, 1 - tf.shape(ids)[1])]], constant_values=pad_id)
        batch = tf.shape(ids)[0]
        length = tf.shape(ids)[1]
        inputs = {"token_ids": ids, "padding_mask": tf.not_equal(ids, pad_id)}
        if sees_task:  # one pass per task, with its id
            inputs = {k: tf.tile(v, [num_tasks, 1]) for k, v in inputs.items()}
            inputs["task_ids"] = tf.repeat(tf.range(num_tasks, dtype=tf.int32), batch)
        out = model_fn(inputs)
        result = {"num_words": enc["num_words"], "truncated": enc["truncated"]}
        starts = enc["word_starts"].to_tensor(default_value=-1)
        for t, head in enumerate(heads):
            ys = {k: tf.cast(out[k], tf.float32) for k in head.output_names}
            if sees_task:  # the rows run with this task's id
                ys = {k: y[t * batch : (t + 1) * batch] for k, y in ys.items()}
            result.update(head.serving_outputs(ys, batch, starts, length))
        return result

    return serving_default


def _model_signature(model, sees_task, length=None):
    import tensorflow as tf

    spec = {
        "token_ids": tf.TensorSpec([None, length], tf.int32, name="token_ids"),
        "padding_mask": tf.TensorSpec([None, length], tf.bool, name="padding_mask"),
    }
    if sees_task:
        spec["task_ids"] = tf.TensorSpec([None], tf.int32, name="task_ids")
    return [spec]


def build_archive(run, model=None):
    """An `ExportArchive` holding the model, the tokenizer and both endpoints."""
    import keras

    from keras_mtl.data.tokenize import make_encoder
    from keras_mtl import model as model_lib

    model = model or run.load_model()
    encoder = make_encoder(run.vocabulary, run.config.model)
    sees_task = model_lib.sees_task(run.config.model)
    archive = keras.export.ExportArchive()
    kwargs, length = {}, None
    if keras.backend.backend() == "jax":
        kwargs["jax2tf_kwargs"] = {"native_serialization": True}
        length = run.config.model.max_sequence_length
    model_fn = archive.track_and_add_endpoint(
        "serve_tokens", model, input_signature=_model_signature(model, sees_task, length), **kwargs
    )
    archive.track(encoder.tokenizer)
    serving_fn = _build_serving_fn(model_fn, encoder, run.config.tasks, run.classes, sees_task, length)
    archive.add_endpoint("serving_default", serving_fn)
    return archive


def metadata(run):
    import keras
    import tensorflow as tf

    from keras_mtl import __version__

    return {
        "name": run.config.name,
        "tasks": {
            t.name: {"type": t.type, "classes": run.classes[t.name], "metrics": t.metrics} for t in run.config.tasks
        },
        "max_sequence_length": run.config.model.max_sequence_length,
        "task_conditioning": run.config.model.task_conditioning,
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
        "keras_mtl_version": __version__,
        "needs": "import tensorflow_text (registers the tokenizer ops) before tf.saved_model.load",
    }


def export(workdir, out=None, keep=None, warmup=True, verbose=False):
    """Export a trained work dir as the next version under `out`.

    Args:
        workdir: a trained work dir (`keras-mtl train`).
        out: model base directory. Defaults to `saved_models/<name>`.
        keep: keep only the newest `keep` versions after writing (an int
            >= 1; checked before anything is written).
        warmup: write `assets.extra/tf_serving_warmup_requests` (needs
            `tensorflow-serving-api`; skipped with a note otherwise).

    Concurrent exports to the same `out` each get their own version: the
    SavedModels are written side by side into temporary directories, and the
    version is chosen and renamed into place under a lock on the base dir.

    Returns:
        Path of the new version directory.
    """
    from keras_mtl.workdir import load_run

    keep = layout.check_keep(keep)
    if out is not None:
        layout.prepare_base(out, create=False)  # an --out naming a file fails before the model loads
    run = load_run(workdir)
    base = layout.prepare_base(out if out is not None else layout.default_base(run.config.name))
    with layout.staging_dir(base) as tmp:
        build_archive(run).write_out(str(tmp), verbose=verbose)
        layout.write_assets_extra(tmp, metadata(run), warmup=warmup)
        return layout.publish(tmp, base, keep)
