"""Serving a keras-mtl export with TF Serving, and talking to it.

The export contract: `saved_models/<name>/<version>/` (integer versions) is a
SavedModel with these signatures (`signature_name` in a request):

- `serving_default`: `text`: tf.string [None] (raw UTF-8) -> the outputs of
  every single-text task (a model whose tasks all read pairs: `text` and
  `text_pair` -> every pair task's);
- `<task>`, one per task: `text` (and `text_pair` for a sentence-pair task)
  -> that task's outputs only;
- `serve_tokens`: encoded token ids, for clients that tokenize themselves.

The outputs, all with the batch as dim 0:

- classification task T: `T_label` string [B], `T_probabilities` float32
  [B, C], `T_classes` string [B, C] (class names tiled per row: TF Serving's
  row format needs every output to share the batch dim);
- tagging task T: `T_tags` string [B, W] ("" beyond each row's word count);
- regression task T: `T_value` float32 [B];
- multilabel task T: `T_labels` string [B, C] ("" where not predicted),
  `T_probabilities`, `T_classes`;
- common: `num_words` int32 [B], `truncated` bool [B] (pieces were dropped),
  `windows` int32 [B] (the windows a long text was read in; docs/long_inputs.md).

`<version>/assets.extra/keras_mtl.json` holds {"name", "tasks" (each with its
signature's "inputs"), "serving_default" (the tasks it answers), "backend", ...}.

- `layout`: the on-disk layout of a model base (versions, `assets.extra/`,
  the export lock and temporaries, the config file names); `find_versions`
  and `read_model_info` read it.
- `keras_mtl.serving.predict.predict`: local predictions from a SavedModel,
  the same answers as the clients (`keras_mtl.predict`);
  `keras_mtl.serving.predict.predict_file`: every line of a JSON Lines or TSV
  file (`keras-mtl predict MODEL --input F`), streaming, in input order, for
  an export or a URL (input files: `keras_mtl.serving.input_file`).
- `outputs_to_predictions`: outputs -> per-task JSON (local and remote alike).
- `keras_mtl.serving.ops`: the ops of an export's graph (`graph_ops`) and the
  TF Text ops it is promised to use (`TF_TEXT_OPS`, all in TF Text 2.12, so
  TF Serving 2.16 and later load it; `check_ops`).
- `write_serving_files`, `serve_command`, `docker_command`, `serve`: config
  files and how to start TF Serving on an export.
- `predict_rest`, `predict_grpc`, `predict_remote`: clients; they send at
  most `max_batch_size` texts per request (default `DEFAULT_MAX_BATCH_SIZE`,
  the batching.config value that `serve` writes; `read_max_batch_size` reads
  it back), since TF Serving refuses larger requests when batching is on.
"""

from keras_mtl.serving.client import (
    UnknownSignature,
    predict_grpc,
    predict_remote,
    predict_rest,
    rest_request_body,
)
from keras_mtl.serving.server_config import (
    DEFAULT_MAX_BATCH_SIZE,
    JAX_BACKEND_NOTE,
    batching_config_text,
    docker_command,
    model_config_text,
    monitoring_config_text,
    read_max_batch_size,
    serve,
    serve_command,
    write_serving_files,
)
from keras_mtl.serving.layout import find_versions, read_model_info
from keras_mtl.serving.predict import predict_file
from keras_mtl.serving.outputs import outputs_to_predictions, validate_text_pairs, validate_texts

__all__ = [
    "DEFAULT_MAX_BATCH_SIZE",
    "JAX_BACKEND_NOTE",
    "UnknownSignature",
    "batching_config_text",
    "docker_command",
    "find_versions",
    "model_config_text",
    "monitoring_config_text",
    "outputs_to_predictions",
    "predict_file",
    "predict_grpc",
    "predict_remote",
    "predict_rest",
    "read_max_batch_size",
    "read_model_info",
    "rest_request_body",
    "serve",
    "serve_command",
    "validate_text_pairs",
    "validate_texts",
    "write_serving_files",
]
