"""Clients for a running TF Serving: REST (urllib only) and gRPC.

Both return the per-task JSON of `outputs_to_predictions`, one dict per text,
identical to the local `predict` of the same export.

REST request bodies (https://www.tensorflow.org/tfx/serving/api_rest):

    row:      {"signature_name": "serving_default", "instances": [{"text": "..."}, ...]}
    columnar: {"signature_name": "serving_default", "inputs": {"text": ["...", ...]}}

A sentence-pair task's signature (named like the task) takes a second
string input, `text_pair`, one per text:

    row:      {"signature_name": "rte", "instances": [{"text": "a", "text_pair": "b"}, ...]}
    columnar: {"signature_name": "rte", "inputs": {"text": ["a", ...], "text_pair": ["b", ...]}}

and a gRPC PredictRequest carries `model_spec.signature_name` and two string
tensors, `text` and `text_pair`. A single-text task's signature takes `text`
alone, like `serving_default`.

JSON strings must be valid Unicode: texts given as `bytes` are sent as
`{"b64": "<base64>"}`, which TF Serving decodes into the raw bytes of the
string tensor (so any byte string reaches the model unchanged).

With batching on, TF Serving refuses a request holding more texts than the
`max_batch_size` of its batching parameters ("Task size N is larger than
maximum input batch size M"). Both clients therefore send the texts in
requests of at most `max_batch_size` texts (default: the 32 that
`keras-mtl serve` writes into batching.config; `read_max_batch_size` reads
it back from a model dir) and return the answers concatenated, in order.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from keras_mtl.errors import ServingError
from keras_mtl.serving.server_config import DEFAULT_MAX_BATCH_SIZE
from keras_mtl.serving.outputs import outputs_to_predictions, validate_text_pairs, validate_texts

SIGNATURE = "serving_default"
INPUT_NAME = "text"
PAIR_INPUT_NAME = "text_pair"
GRPC_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

_REST_URL_RE = re.compile(
    r"^(?P<prefix>https?://[^/?#]+(?:/[^?#]*?)?)/v1/models/(?P<name>[^/:?#]+)"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:?#]+))?/?$"
)
# TF Serving's answer to a request above max_batch_size (shared_batch_scheduler.h)
_TOO_LARGE_RE = re.compile(r"Task size \d+ is larger than maximum input batch size (?P<limit>\d+)")
# TF Serving's answer to a signature the model lacks (tensorflow_serving/servables/tensorflow/util.cc)
_NO_SIGNATURE_RE = re.compile(r'signature name: "(?P<name>[^"]*)" not found', re.IGNORECASE)
# ... and to inputs that are not the signature's (predict_util.cc: "input size does not
# match signature: 1!=2 len({text}) != len({text,text_pair}). Sent extra: {}. Missing but
# required: {text_pair}.")
_MISSING_PAIR_RE = re.compile(r"Missing but required: \{[^}]*\btext_pair\b")
_EXTRA_PAIR_RE = re.compile(r"Sent extra: \{[^}]*\btext_pair\b")
_GRPC_URL_RE = re.compile(
    r"^grpc://(?P<target>[^/?#]+)/(?P<name>[^/:?#]+)"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:?#]+))?/?$"
)


class UnknownSignature(ServingError):
    """TF Serving answered that the model has no signature `signature_name`
    (an export older than per-task signatures, or a task it does not have)."""

    def __init__(self, message: str, signature_name: str):
        super().__init__(message)
        self.signature_name = signature_name


def _server_error(message: str, signature_name: str, pairs_given: bool) -> ServingError:
    """The error for a server's refusal: `UnknownSignature` when the model lacks the
    signature; a hint when the inputs were not the signature's (text_pair or not)."""
    match = _NO_SIGNATURE_RE.search(message)
    if match and match["name"] == signature_name:
        return UnknownSignature(message, signature_name)
    if not pairs_given and _MISSING_PAIR_RE.search(message):
        message += (f" (signature {signature_name!r} takes sentence pairs: "
                    "give a text_pair for every text)")
    elif pairs_given and _EXTRA_PAIR_RE.search(message):
        message += f" (signature {signature_name!r} takes single texts: leave text_pair out)"
    return ServingError(message)


def _check_signature_name(signature_name: Any) -> str:
    if not isinstance(signature_name, str) or not signature_name:
        raise ServingError(f"signature_name must be a non-empty string, got {signature_name!r}")
    return signature_name


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _error_text(raw: bytes) -> str:
    try:
        body = json.loads(raw.decode("utf-8", errors="replace"))
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return raw.decode("utf-8", errors="replace").strip()[:500]


def _json_text(text: str | bytes) -> Any:
    if isinstance(text, bytes):
        return {"b64": base64.b64encode(text).decode("ascii")}
    return text


def _request_size(max_batch_size: int | None) -> int:
    if max_batch_size is None:
        return DEFAULT_MAX_BATCH_SIZE
    if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
        raise ServingError(f"max_batch_size must be an integer >= 1, got {max_batch_size!r}")
    return max_batch_size


def _chunks(items: list, size: int) -> list[tuple[int, list]]:
    """(offset, items) slices of at most `size` items, in order."""
    return [(i, items[i:i + size]) for i in range(0, len(items), size)]


def _where(offset: int, chunk: list, total: int) -> str:
    """' (request for texts a-b of N)' when the texts go in several requests, else ''."""
    if len(chunk) == total:
        return ""
    return f" (request for texts {offset + 1}-{offset + len(chunk)} of {total})"


def rest_request_body(texts: Sequence[str | bytes], format: str = "instances",
                      signature_name: str = SIGNATURE,
                      text_pairs: Sequence[str | bytes] | None = None) -> dict:
    """The JSON body of a REST predict request (texts and text_pairs already validated).

    With `text_pairs` (one per text) every instance, or the columnar inputs,
    also carry `text_pair`, the second input of a sentence-pair signature.
    """
    values = [_json_text(t) for t in texts]
    pairs = None if text_pairs is None else [_json_text(t) for t in text_pairs]
    if pairs is not None and len(pairs) != len(values):
        raise ServingError(
            f"{len(pairs)} text_pairs for {len(values)} texts: give one text_pair per text, in order")
    if format == "instances":
        if pairs is None:
            instances = [{INPUT_NAME: v} for v in values]
        else:
            instances = [{INPUT_NAME: v, PAIR_INPUT_NAME: p} for v, p in zip(values, pairs)]
        return {"signature_name": signature_name, "instances": instances}
    if format == "inputs":
        inputs = {INPUT_NAME: values}
        if pairs is not None:
            inputs[PAIR_INPUT_NAME] = pairs
        return {"signature_name": signature_name, "inputs": inputs}
    raise ServingError(f"format must be 'instances' (row) or 'inputs' (columnar), got {format!r}")


def _signature_tasks(tasks: Mapping[str, Any] | None, signature_name: str) -> Mapping[str, Any] | None:
    """The part of keras_mtl.json's `tasks` that a signature answers: a task's own
    signature, that task; `serving_default`, the single-text tasks (every task when
    there are none, or in an export without per-task `inputs`)."""
    if tasks is None:
        return None
    if signature_name in tasks:
        return {signature_name: tasks[signature_name]}
    if signature_name == SIGNATURE:
        single = {name: spec for name, spec in tasks.items()
                  if not isinstance(spec, Mapping) or list(spec.get("inputs") or [INPUT_NAME]) == [INPUT_NAME]}
        return single or tasks
    return tasks


def _chunk_predictions(outputs, tasks, chunk: list, server: str, where: str) -> list[dict]:
    """The predictions in a server's `outputs` for the texts `chunk`: one for each."""
    answered = outputs_to_predictions(outputs, tasks)
    if len(answered) != len(chunk):
        raise ServingError(
            f"TF Serving at {server} answered {len(answered)} predictions for "
            f"{len(chunk)} texts{where}"
        )
    return answered


def _rest_outputs(body: Any, endpoint: str) -> dict[str, list]:
    if not isinstance(body, dict):
        raise ServingError(f"{endpoint} answered {type(body).__name__}, not a JSON object")
    if "error" in body:
        raise ServingError(f"TF Serving at {endpoint}: {_one_line(str(body['error']))}")
    if "predictions" in body:
        rows = body["predictions"]
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ServingError(
                f"{endpoint}: 'predictions' is not a list of named outputs; is this "
                "a keras-mtl export (it has several named outputs)?"
            )
        keys = list(rows[0]) if rows else []
        return {k: [r.get(k) for r in rows] for k in keys}
    if "outputs" in body:
        outputs = body["outputs"]
        if not isinstance(outputs, dict):
            raise ServingError(
                f"{endpoint}: 'outputs' is not an object of named outputs; is this "
                "a keras-mtl export (it has several named outputs)?"
            )
        return outputs
    raise ServingError(
        f"{endpoint} answered neither 'predictions' nor 'outputs': keys {sorted(body)}"
    )


def predict_rest(
    url: str,
    texts: Sequence[str | bytes],
    format: str = "instances",
    timeout: float = 30,
    *,
    signature_name: str = SIGNATURE,
    tasks: Mapping[str, Any] | None = None,
    max_batch_size: int | None = None,
    text_pairs: Sequence[str | bytes] | None = None,
) -> list[dict]:
    """Predict through TF Serving's REST API.

    Args:
      url: `http(s)://host:8501/v1/models/<name>`, optionally followed by
        `/versions/<N>` or `/labels/<label>` (a trailing `:predict` is accepted).
      texts: str (sent as JSON strings) or bytes (sent as {"b64": ...}).
      format: "instances" (row format, answered as "predictions") or "inputs"
        (columnar, answered as "outputs"); the answers are identical.
      signature_name: `serving_default`, or a task's own signature (named
        like the task). A signature the model lacks raises `UnknownSignature`.
      tasks: keras_mtl.json's `tasks`, passed to `outputs_to_predictions`
        (default: inferred), narrowed to those the signature answers.
      max_batch_size: at most this many texts per request (default 32, what
        `keras-mtl serve` writes; TF Serving refuses larger requests).
        `timeout` applies to each request.
      text_pairs: the second texts of a sentence-pair signature, one per
        text (sent as the `text_pair` input, in the same requests).
    """
    items = validate_texts(texts)
    pairs = validate_text_pairs(items, text_pairs)
    size = _request_size(max_batch_size)
    signature_name = _check_signature_name(signature_name)
    tasks = _signature_tasks(tasks, signature_name)
    base = url.strip()
    if base.endswith(":predict"):
        base = base[: -len(":predict")]
    if not _REST_URL_RE.match(base):
        raise ServingError(
            f"REST url {url!r} is not of the form http://host:port/v1/models/<name>"
            "[/versions/<N>|/labels/<label>]"
        )
    base = base.rstrip("/")
    endpoint = base + ":predict"
    rest_request_body(items[:1], format, signature_name)  # a bad format fails before any request
    host = urllib.parse.urlsplit(endpoint).hostname
    # loopback never goes through an http_proxy from the environment
    opener = (urllib.request.build_opener(urllib.request.ProxyHandler({}))
              if _is_loopback(host) else urllib.request.build_opener())
    predictions: list[dict] = []
    for offset, chunk in _chunks(items, size):
        where = _where(offset, chunk, len(items))
        pair_chunk = None if pairs is None else pairs[offset:offset + len(chunk)]
        payload = json.dumps(rest_request_body(chunk, format, signature_name, pair_chunk),
                             ensure_ascii=False).encode("utf-8")
        raw = _post(opener, endpoint, payload, timeout, where, signature_name, pairs is not None)
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ServingError(
                f"TF Serving at {endpoint} answered invalid JSON{where}: {raw[:200]!r}"
            ) from None
        predictions += _chunk_predictions(_rest_outputs(body, endpoint), tasks, chunk, endpoint, where)
    return predictions


def _post(opener, endpoint: str, payload: bytes, timeout: float, where: str,
          signature_name: str = SIGNATURE, pairs_given: bool = False) -> bytes:
    request = urllib.request.Request(
        endpoint, data=payload, method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as err:
        raw = err.read() if err.fp is not None else b""
        message = (f"TF Serving at {endpoint} answered HTTP {err.code}{where}: "
                   f"{_one_line(_error_text(raw) or str(err.reason))}")
        raise _server_error(message, signature_name, pairs_given) from None
    except urllib.error.URLError as err:
        if isinstance(err.reason, (TimeoutError, socket.timeout)):
            raise ServingError(f"TF Serving at {endpoint} did not answer within {timeout} s{where}") from None
        raise ServingError(f"cannot reach TF Serving at {endpoint}: {_one_line(str(err.reason))}") from None
    except (TimeoutError, socket.timeout):
        raise ServingError(f"TF Serving at {endpoint} did not answer within {timeout} s{where}") from None
    except OSError as err:
        raise ServingError(f"cannot reach TF Serving at {endpoint}: {_one_line(str(err))}") from None


def batch_limit_hint(limit: int | str, option: str = "max_batch_size") -> str:
    """The advice added to TF Serving's refusal of a request above its
    max_batch_size. `option` is how the caller sets the texts per request:
    a Python argument (`max_batch_size`, `batch_size`: `pass NAME=N`) or a
    command-line option (`--batch-size`: `pass --batch-size N`)."""
    give = f"{option} {limit}" if option.startswith("-") else f"{option}={limit}"
    return f"(this server takes at most {limit} texts per request: pass {give})"


_HINT_RE = re.compile(r"\(this server takes at most (?P<limit>\d+) texts per request: pass max_batch_size=\d+\)")


def with_batch_option(error: Exception, option: str) -> Exception:
    """`error` with its batch-size advice (`batch_limit_hint`) naming `option`
    instead of `max_batch_size`: a new `ServingError`, or `error` itself when
    it holds no such advice."""
    text = str(error)
    match = _HINT_RE.search(text)
    if match is None:
        return error
    return ServingError(text[:match.start()] + batch_limit_hint(match["limit"], option) + text[match.end():])


def _one_line(text: str) -> str:
    """Server messages can span lines; the CLI prints errors on one."""
    text = " ".join(text.split())
    match = _TOO_LARGE_RE.search(text)
    if match:
        text += " " + batch_limit_hint(match["limit"])
    return text


def _grpc_modules():
    try:
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    except ImportError as err:
        raise ServingError(
            f"the gRPC client needs tensorflow-serving-api and grpcio ({err}); "
            "pip install keras-mtl[serving]"
        ) from None
    return grpc, tf, predict_pb2, prediction_service_pb2_grpc


def predict_grpc(
    target: str,
    model_name: str,
    texts: Sequence[str | bytes],
    timeout: float = 30,
    signature_name: str = SIGNATURE,
    *,
    version: int | None = None,
    version_label: str | None = None,
    tasks: Mapping[str, Any] | None = None,
    max_batch_size: int | None = None,
    text_pairs: Sequence[str | bytes] | None = None,
) -> list[dict]:
    """Predict through TF Serving's gRPC PredictionService.Predict.

    Args:
      target: `host:port` of the gRPC port (8500 by default; insecure channel).
      model_name: the served model name.
      signature_name: `serving_default`, or a task's own signature (named
        like the task). A signature the model lacks raises `UnknownSignature`.
      version / version_label: pin a version or a label (default: latest).
      max_batch_size: at most this many texts per request (default 32, what
        `keras-mtl serve` writes; TF Serving refuses larger requests).
        `timeout` applies to each request.
      text_pairs: the second texts of a sentence-pair signature, one per
        text (a second string tensor input, `text_pair`).
    """
    items = validate_texts(texts)
    pairs = validate_text_pairs(items, text_pairs)
    size = _request_size(max_batch_size)
    signature_name = _check_signature_name(signature_name)
    tasks = _signature_tasks(tasks, signature_name)
    if version is not None and version_label is not None:
        raise ServingError("give either version or version_label, not both")
    grpc, tf, predict_pb2, prediction_service_pb2_grpc = _grpc_modules()
    import numpy as np

    target = target[len("grpc://"):] if target.startswith("grpc://") else target

    def strings(values):
        data = np.array([t.encode("utf-8") if isinstance(t, str) else t for t in values],
                        dtype=object)
        return tf.make_tensor_proto(data, dtype=tf.string, shape=[len(values)])

    def request_for(chunk, pair_chunk):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature_name
        if version is not None:
            request.model_spec.version.value = int(version)
        elif version_label is not None:
            request.model_spec.version_label = version_label
        request.inputs[INPUT_NAME].CopyFrom(strings(chunk))
        if pair_chunk is not None:
            request.inputs[PAIR_INPUT_NAME].CopyFrom(strings(pair_chunk))
        return request

    options = [("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
               ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES)]
    if _is_loopback(target.rsplit(":", 1)[0].strip("[]")):
        options.append(("grpc.enable_http_proxy", 0))
    predictions: list[dict] = []
    try:
        channel = grpc.insecure_channel(target, options=options)
    except Exception as err:  # a malformed target
        raise ServingError(f"cannot reach TF Serving at {target!r}: {_one_line(str(err))}") from None
    with channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for offset, chunk in _chunks(items, size):
            where = _where(offset, chunk, len(items))
            pair_chunk = None if pairs is None else pairs[offset:offset + len(chunk)]
            try:
                response = stub.Predict(request_for(chunk, pair_chunk), timeout=timeout)
            except grpc.RpcError as err:
                code = err.code() if hasattr(err, "code") else None
                details = _one_line(str(err.details() if hasattr(err, "details") else err))
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise ServingError(
                        f"TF Serving at {target} did not answer within {timeout} s{where}") from None
                if code == grpc.StatusCode.UNAVAILABLE:
                    raise ServingError(f"cannot reach TF Serving at {target}: {details}") from None
                name = code.name if code is not None else "error"
                message = f"TF Serving at {target} answered {name}{where}: {details}"
                raise _server_error(message, signature_name, pairs is not None) from None
            outputs = {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}
            predictions += _chunk_predictions(outputs, tasks, chunk, target, where)
    return predictions


def predict_remote(
    url: str,
    texts: Sequence[str | bytes],
    timeout: float = 30,
    *,
    tasks: Mapping[str, Any] | None = None,
    format: str = "instances",
    signature_name: str = SIGNATURE,
    max_batch_size: int | None = None,
    text_pairs: Sequence[str | bytes] | None = None,
) -> list[dict]:
    """Predict on a TF Serving given by URL.

    `http(s)://host:8501/v1/models/<name>[/versions/N|/labels/L]` -> REST;
    `grpc://host:8500/<name>[/versions/N|/labels/L]` -> gRPC. Texts go in
    requests of at most `max_batch_size` (default 32, as `keras-mtl serve`
    configures TF Serving). `signature_name` picks a task's own signature
    (`"rte"`); `text_pairs` (one per text) are the second texts of a
    sentence-pair task's signature.
    """
    if not isinstance(url, str):
        raise ServingError(f"serving url must be a string, got {type(url).__name__}")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("http", "https"):
        return predict_rest(url, texts, format=format, timeout=timeout,
                            signature_name=signature_name, tasks=tasks,
                            max_batch_size=max_batch_size, text_pairs=text_pairs)
    if scheme == "grpc":
        match = _GRPC_URL_RE.match(url.strip())
        if not match:
            raise ServingError(
                f"gRPC url {url!r} is not of the form grpc://host:port/<name>"
                "[/versions/<N>|/labels/<label>]"
            )
        version = match["version"]
        return predict_grpc(match["target"], match["name"], texts, timeout=timeout,
                            signature_name=signature_name,
                            version=int(version) if version else None,
                            version_label=match["label"], tasks=tasks,
                            max_batch_size=max_batch_size, text_pairs=text_pairs)
    raise ServingError(
        f"unsupported serving url {url!r}: use http(s)://host:8501/v1/models/<name> "
        "(REST) or grpc://host:8500/<name> (gRPC)"
    )
