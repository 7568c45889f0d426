"""Sentence pairs and per-task signatures through the TF Serving clients.

The request payloads are checked against TF Serving's documented formats
(https://www.tensorflow.org/tfx/serving/api_rest):

    row:      {"signature_name": "rte", "instances": [{"text": "a", "text_pair": "b"}, ...]}
    columnar: {"signature_name": "rte", "inputs": {"text": ["a", ...], "text_pair": ["b", ...]}}

and, for gRPC, a `PredictRequest` with `model_spec.signature_name` and two
string tensors. Fake TF Serving servers (loopback, ephemeral ports) answer
them the way TF Serving does, including its error messages for a signature
the model lacks (util.cc) and for inputs that are not the signature's
(predict_util.cc); their heads are plain Python, so no SavedModel is needed:
sentiment "pos" iff a word is "good"; rte "entailment" iff the text starts
with the text_pair; stsb words(text) + words(text_pair) / 10.
"""

from __future__ import annotations

import base64
import json
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from keras_mtl.errors import ServingError
from keras_mtl.serving import predict_grpc, predict_remote, predict_rest, rest_request_body
from keras_mtl.serving.client import UnknownSignature
from keras_mtl.serving.predict import RemoteTask

MODEL = "fake"
TEXTS = ["the good dog ran", "a cat", "caf\u00e9 good"]
PAIRS = ["the good", "dog", ""]


def _words(value):
    return len(value.split())


def _sentiment(text, pair=None):
    good = "good" in text.split()
    return {"sentiment_label": "pos" if good else "neg",
            "sentiment_probabilities": [0.1, 0.9] if good else [0.8, 0.2],
            "sentiment_classes": ["neg", "pos"]}


def _rte(text, pair):
    entails = text.startswith(pair)
    return {"rte_label": "entailment" if entails else "not_entailment",
            "rte_probabilities": [0.9, 0.1] if entails else [0.3, 0.7],
            "rte_classes": ["entailment", "not_entailment"]}


def _stsb(text, pair):
    return {"stsb_value": _words(text) + _words(pair) / 10}


# signature name -> (its inputs, its heads); "old" servers have serving_default only
SIGNATURES = {
    "serving_default": (("text",), [_sentiment]),
    "sentiment": (("text",), [_sentiment]),
    "rte": (("text", "text_pair"), [_rte]),
    "stsb": (("text", "text_pair"), [_stsb]),
}
OLD_SIGNATURES = {"serving_default": SIGNATURES["serving_default"]}


def answer(signatures, signature_name, inputs):
    """(outputs dict of lists, None) or (None, TF Serving's error message)."""
    if signature_name not in signatures:
        return None, f'Serving signature name: "{signature_name}" not found in signature def'
    wanted, heads = signatures[signature_name]
    if set(inputs) != set(wanted):
        sent, need = sorted(inputs), sorted(wanted)
        return None, (f"input size does not match signature: {len(sent)}!={len(need)} "
                      f"len({{{','.join(sent)}}}) != len({{{','.join(need)}}}). "
                      f"Sent extra: {{{','.join(sorted(set(sent) - set(need)))}}}. "
                      f"Missing but required: {{{','.join(sorted(set(need) - set(sent)))}}}.")
    texts = inputs["text"]
    pairs = inputs.get("text_pair", [None] * len(texts))
    if len(pairs) != len(texts):
        return None, "Input to reshape is a tensor with mismatched batch sizes"
    rows = []
    for text, pair in zip(texts, pairs):
        row = {}
        for head in heads:
            row.update(head(text, pair))
        n = _words(text) + (_words(pair) if pair is not None else 0)
        row.update({"num_words": n, "truncated": n > 6})
        rows.append(row)
    return {key: [row[key] for row in rows] for key in rows[0]}, None


def _from_json(value):
    if isinstance(value, dict):
        return base64.b64decode(value["b64"]).decode("latin-1")
    return value


# --------------------------------------------------------------------------
# REST
# --------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, status, body):
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.received.append(body)
        if self.path != f"/v1/models/{MODEL}:predict":
            return self._send(404, {"error": f"Servable not found: {self.path}"})
        if "instances" in body:
            rows = body["instances"]
            keys = set(rows[0])
            if any(set(row) != keys for row in rows):
                return self._send(400, {"error": "Failed to process element: keys differ between instances"})
            inputs = {key: [_from_json(row[key]) for row in rows] for key in keys}
        else:
            inputs = {key: [_from_json(v) for v in values] for key, values in body["inputs"].items()}
        if len(inputs["text"]) > self.server.max_batch_size:
            return self._send(400, {"error": f"Task size {len(inputs['text'])} is larger than maximum "
                                             f"input batch size {self.server.max_batch_size}"})
        outputs, error = answer(self.server.signatures, body.get("signature_name", "serving_default"), inputs)
        if error:
            return self._send(400, {"error": error})
        if "instances" in body:
            n = len(inputs["text"])
            return self._send(200, {"predictions": [{k: v[i] for k, v in outputs.items()} for i in range(n)]})
        return self._send(200, {"outputs": outputs})


@pytest.fixture()
def rest(serving_in_thread):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.received = []
    server.signatures = SIGNATURES
    server.max_batch_size = 32
    server.url = f"http://127.0.0.1:{server.server_address[1]}/v1/models/{MODEL}"
    with serving_in_thread(server):
        yield server


def expected_rte(texts, pairs):
    out = []
    for text, pair in zip(texts, pairs):
        entails = text.startswith(pair)
        n = _words(text) + _words(pair)
        out.append({"rte": {"label": "entailment" if entails else "not_entailment",
                            "probabilities": {"entailment": 0.9 if entails else 0.3,
                                              "not_entailment": 0.1 if entails else 0.7}},
                    "_meta": {"num_words": n, "truncated": n > 6}})
    return out


def test_rest_request_body_with_pairs_is_the_documented_format():
    assert rest_request_body(["a", "b"], "instances", "rte", ["c", "d"]) == {
        "signature_name": "rte",
        "instances": [{"text": "a", "text_pair": "c"}, {"text": "b", "text_pair": "d"}],
    }
    assert rest_request_body(["a", "b"], "inputs", "rte", ["c", "d"]) == {
        "signature_name": "rte", "inputs": {"text": ["a", "b"], "text_pair": ["c", "d"]},
    }
    # bytes go as {"b64": ...} in either input; no pairs: the single-text body of before
    assert rest_request_body(["a"], "instances", "rte", [b"\xff"])["instances"] == [
        {"text": "a", "text_pair": {"b64": base64.b64encode(b"\xff").decode()}}]
    assert rest_request_body(["a"], "inputs") == {"signature_name": "serving_default", "inputs": {"text": ["a"]}}
    with pytest.raises(ServingError, match="1 text_pairs for 2 texts"):
        rest_request_body(["a", "b"], "instances", "rte", ["c"])


@pytest.mark.parametrize("format", ["instances", "inputs"])
def test_rest_pairs_to_a_pair_signature(rest, format):
    got = predict_rest(rest.url, TEXTS, format=format, signature_name="rte", text_pairs=PAIRS, timeout=10)
    assert got == expected_rte(TEXTS, PAIRS)
    [body] = rest.received
    if format == "instances":
        assert body == {"signature_name": "rte",
                        "instances": [{"text": t, "text_pair": p} for t, p in zip(TEXTS, PAIRS)]}
    else:
        assert body == {"signature_name": "rte", "inputs": {"text": TEXTS, "text_pair": PAIRS}}


def test_metadata_tasks_are_narrowed_to_the_signature(rest):
    """`tasks=` from keras_mtl.json names every task; each signature answers only some."""
    tasks = {"sentiment": {"type": "classification", "classes": ["neg", "pos"], "inputs": ["text"]},
             "rte": {"type": "classification", "classes": ["entailment", "not_entailment"],
                     "inputs": ["text", "text_pair"]},
             "stsb": {"type": "regression", "inputs": ["text", "text_pair"]}}
    assert predict_rest(rest.url, TEXTS, signature_name="rte", text_pairs=PAIRS, tasks=tasks,
                        timeout=10) == expected_rte(TEXTS, PAIRS)
    got = predict_rest(rest.url, TEXTS[:1], tasks=tasks, timeout=10)
    assert sorted(got[0]) == ["_meta", "sentiment"] and got[0]["sentiment"]["label"] == "pos"


def test_rest_chunks_keep_pairs_aligned(rest):
    texts = [f"t{i} " + "w " * (i % 5) for i in range(75)]
    pairs = [f"t{i}" if i % 4 else f"p{i}" for i in range(75)]
    rest.max_batch_size = 10
    got = predict_remote(rest.url, texts, signature_name="rte", text_pairs=pairs, max_batch_size=10, timeout=10)
    assert got == expected_rte(texts, pairs)
    assert [len(b["instances"]) for b in rest.received] == [10] * 7 + [5]
    sent = [(row["text"], row["text_pair"]) for b in rest.received for row in b["instances"]]
    assert sent == list(zip(texts, pairs))
    assert {b["signature_name"] for b in rest.received} == {"rte"}
    stsb = predict_rest(rest.url, texts, format="inputs", signature_name="stsb", text_pairs=pairs,
                        max_batch_size=10, timeout=10)
    assert [p["stsb"]["value"] for p in stsb] == [
        pytest.approx(_words(t) + _words(p) / 10) for t, p in zip(texts, pairs)]


def test_rest_pair_signature_without_text_pair_is_a_clear_error(rest):
    with pytest.raises(ServingError) as info:
        predict_rest(rest.url, TEXTS, signature_name="rte", timeout=10)
    message = str(info.value)
    assert "\n" not in message and "HTTP 400" in message
    assert "Missing but required: {text_pair}" in message
    assert message.endswith("(signature 'rte' takes sentence pairs: give a text_pair for every text)")
    with pytest.raises(ServingError) as info:
        predict_rest(rest.url, TEXTS, signature_name="sentiment", text_pairs=PAIRS, timeout=10)
    assert "Sent extra: {text_pair}" in str(info.value)
    assert str(info.value).endswith("(signature 'sentiment' takes single texts: leave text_pair out)")


def test_rest_unknown_signature_and_bad_pairs(rest):
    with pytest.raises(UnknownSignature) as info:
        predict_rest(rest.url, TEXTS, signature_name="nope", timeout=10)
    assert info.value.signature_name == "nope" and 'signature name: "nope" not found' in str(info.value)
    assert isinstance(info.value, ServingError)
    rest.received.clear()
    for pairs, message in [(PAIRS[:1], "1 text_pairs for 3 texts"), ("ab", "text_pairs must be a list"),
                           ([1, 2, 3], "text_pair at index 0 is int")]:
        with pytest.raises(ServingError, match=message):
            predict_rest(rest.url, TEXTS, signature_name="rte", text_pairs=pairs, timeout=10)
    with pytest.raises(ServingError, match="signature_name must be a non-empty string"):
        predict_rest(rest.url, TEXTS, signature_name="", timeout=10)
    assert rest.received == []  # refused before any request


def test_remote_task_uses_the_task_signature_and_falls_back_on_old_servers(rest):
    remote = RemoteTask(rest.url, "rte", timeout=10)
    assert remote(TEXTS, PAIRS) == expected_rte(TEXTS, PAIRS)
    assert rest.received[-1]["signature_name"] == "rte"
    rest.received.clear()
    assert RemoteTask(rest.url, "sentiment", timeout=10)(TEXTS[:1]) == [
        {"sentiment": {"label": "pos", "probabilities": {"neg": 0.1, "pos": 0.9}},
         "_meta": {"num_words": 4, "truncated": False}}]
    assert [b["signature_name"] for b in rest.received] == ["sentiment"]

    # a server whose export has serving_default only: the task is read from it, once found out
    rest.signatures = OLD_SIGNATURES
    rest.received.clear()
    remote = RemoteTask(rest.url, "sentiment", timeout=10)
    first = remote(TEXTS[:1])
    assert first == [{"sentiment": {"label": "pos", "probabilities": {"neg": 0.1, "pos": 0.9}},
                      "_meta": {"num_words": 4, "truncated": False}}]
    assert remote(TEXTS[:1]) == first
    assert [b["signature_name"] for b in rest.received] == ["sentiment", "serving_default", "serving_default"]
    with pytest.raises(ServingError) as info:
        RemoteTask(rest.url, "nope", timeout=10)(TEXTS)
    assert str(info.value) == (f"{rest.url}: no task 'nope': the served model has no signature 'nope', "
                               "and its serving_default answers sentiment")
    with pytest.raises(ServingError, match="the served model has no signature 'rte', which a sentence-pair task needs"):
        RemoteTask(rest.url, "rte", timeout=10)(TEXTS, PAIRS)


def test_cli_predict_url_with_a_pair_task(rest, capsys):
    from keras_mtl.cli import main

    assert main(["predict", rest.url, TEXTS[0], TEXTS[1], "--task", "rte",
                 "--text-pair", PAIRS[0], "--text-pair", PAIRS[1]]) == 0
    captured = capsys.readouterr()
    assert [json.loads(line) for line in captured.out.splitlines()] == expected_rte(TEXTS[:2], PAIRS[:2])
    assert rest.received[-1] == {"signature_name": "rte", "instances": [
        {"text": TEXTS[0], "text_pair": PAIRS[0]}, {"text": TEXTS[1], "text_pair": PAIRS[1]}]}
    # a pair task without --text-pair: the server's refusal, one line, with what to do
    assert main(["predict", rest.url, TEXTS[0], "--task", "rte"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("keras-mtl predict: error: TF Serving at ")
    assert err[0].endswith("(signature 'rte' takes sentence pairs: give a text_pair for every text)")
    # an unknown task: one line naming the tasks serving_default answers
    assert main(["predict", rest.url, TEXTS[0], "--task", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"keras-mtl predict: error: {rest.url}: no task 'nope': the served model has no "
                   "signature 'nope', and its serving_default answers sentiment"]


# --------------------------------------------------------------------------
# gRPC
# --------------------------------------------------------------------------


@pytest.fixture()
def grpc_server():
    grpc = pytest.importorskip("grpc")
    tf = pytest.importorskip("tensorflow")
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    received = []

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        signatures = SIGNATURES

        def Predict(self, request, context):  # noqa: N802
            received.append(request)
            inputs = {key: [v.decode("utf-8", "replace") for v in tf.make_ndarray(proto).tolist()]
                      for key, proto in request.inputs.items()}
            outputs, error = answer(self.signatures, request.model_spec.signature_name or "serving_default",
                                    inputs)
            if error:
                code = (grpc.StatusCode.FAILED_PRECONDITION if "not found" in error
                        else grpc.StatusCode.INVALID_ARGUMENT)
                context.abort(code, error)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = MODEL
            response.model_spec.signature_name = request.model_spec.signature_name
            for key, values in outputs.items():
                array = np.array(values)
                if array.dtype.kind == "U":
                    array = array.astype(object)
                elif array.dtype.kind == "f":
                    array = array.astype(np.float32)
                response.outputs[key].CopyFrom(tf.make_tensor_proto(array))
            return response

    servicer = Servicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", received, servicer
    finally:
        server.stop(grace=None).wait(5)


def test_grpc_pair_request_has_the_signature_and_two_string_tensors(grpc_server):
    tf = pytest.importorskip("tensorflow")
    target, received, _ = grpc_server
    texts, pairs = TEXTS + [b"caf\xe9"], PAIRS + [b"caf"]
    got = predict_grpc(target, MODEL, texts, signature_name="rte", text_pairs=pairs, timeout=10)
    assert [g["rte"]["label"] for g in got] == ["entailment", "not_entailment", "entailment", "entailment"]
    [request] = received
    assert request.model_spec.name == MODEL and request.model_spec.signature_name == "rte"
    assert sorted(request.inputs) == ["text", "text_pair"]
    for key, values in (("text", texts), ("text_pair", pairs)):
        proto = request.inputs[key]
        assert proto.dtype == tf.string.as_datatype_enum
        assert [d.size for d in proto.tensor_shape.dim] == [len(values)]
        assert list(proto.string_val) == [v.encode() if isinstance(v, str) else v for v in values]


def test_grpc_chunks_keep_pairs_aligned(grpc_server):
    target, received, _ = grpc_server
    texts = [f"t{i} " + "w " * (i % 3) for i in range(45)]
    pairs = [f"t{i}" if i % 2 else "x" for i in range(45)]
    got = predict_remote(f"grpc://{target}/{MODEL}", texts, signature_name="stsb", text_pairs=pairs,
                         max_batch_size=20, timeout=10)
    assert [g["stsb"]["value"] for g in got] == [
        pytest.approx(_words(t) + _words(p) / 10) for t, p in zip(texts, pairs)]
    assert [r.inputs["text"].tensor_shape.dim[0].size for r in received] == [20, 20, 5]
    assert [(t.decode(), p.decode()) for r in received
            for t, p in zip(r.inputs["text"].string_val, r.inputs["text_pair"].string_val)] == list(zip(texts, pairs))
    assert {r.model_spec.signature_name for r in received} == {"stsb"}


def test_grpc_pair_errors(grpc_server):
    target, received, servicer = grpc_server
    with pytest.raises(ServingError) as info:
        predict_grpc(target, MODEL, TEXTS, signature_name="rte", timeout=10)
    message = str(info.value)
    assert "INVALID_ARGUMENT" in message and "Missing but required: {text_pair}" in message
    assert message.endswith("(signature 'rte' takes sentence pairs: give a text_pair for every text)")
    with pytest.raises(UnknownSignature) as info:
        predict_grpc(target, MODEL, TEXTS, signature_name="nope", timeout=10)
    assert info.value.signature_name == "nope"
    # the fallback of RemoteTask on an old server, over gRPC
    servicer.signatures = OLD_SIGNATURES
    received.clear()
    got = RemoteTask(f"grpc://{target}/{MODEL}", "sentiment", timeout=10)(TEXTS[:2])
    assert [sorted(g) for g in got] == [["_meta", "sentiment"]] * 2
    assert [r.model_spec.signature_name for r in received] == ["sentiment", "serving_default"]
