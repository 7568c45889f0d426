"""Serving: config files, commands, outputs -> per-task JSON, REST and gRPC clients.

A tiny SavedModel following the export contract is built with plain
TensorFlow; fake TF Serving REST and gRPC servers (loopback, ephemeral ports)
serve it exactly as TF Serving documents, and a real `tensorflow_model_server`
is used when one is on PATH.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from keras_mtl.errors import ModelError, ServingError
from keras_mtl.serving import (
    DEFAULT_MAX_BATCH_SIZE,
    batching_config_text,
    docker_command,
    find_versions,
    model_config_text,
    monitoring_config_text,
    outputs_to_predictions,
    predict_grpc,
    predict_remote,
    predict_rest,
    read_max_batch_size,
    serve,
    serve_command,
    validate_texts,
    write_serving_files,
)

tf = pytest.importorskip("tensorflow")

MODEL_NAME = "tiny"
TASKS = {
    "sentiment": {"type": "classification", "classes": ["neg", "pos"]},
    "chunk": {"type": "tagging", "classes": ["O", "B-NP"]},
    "length": {"type": "regression"},
    "topics": {"type": "multilabel", "classes": ["food", "film", "other"]},
}
MAX_WORDS = 4
TEXTS = ["The food is good", "a bad film", "", "Good good food and a Film too"]


# ---------------------------------------------------------------------------
# the tiny SavedModel


class _Tiny(tf.Module):
    """label "pos" iff a word is "good"; tag B-NP for capitalised words."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
        words = tf.strings.split(text)  # whitespace split on bytes: any input works
        num_words = tf.cast(words.row_lengths(), tf.int32)
        batch = tf.shape(text)[0]

        def has(word):
            return tf.reduce_any(tf.equal(words, word), axis=1)

        p_pos = tf.where(has("good"), tf.constant(0.9), tf.constant(0.2))
        probs = tf.stack([1.0 - p_pos, p_pos], axis=1)
        classes = tf.constant(["neg", "pos"])
        tags = tf.ragged.map_flat_values(
            lambda w: tf.where(tf.strings.regex_full_match(w, "[A-Z].*"), "B-NP", "O"),
            words,
        ).to_tensor(default_value="")
        topic_classes = tf.constant(["food", "film", "other"])
        food, film = has("food"), has("film")
        topic_probs = tf.stack([
            tf.where(food, 0.8, 0.1),
            tf.where(film, 0.7, 0.05),
            tf.where(food | film, 0.3, 0.6),
        ], axis=1)
        topic_labels = tf.where(topic_probs > 0.5,
                                tf.tile(topic_classes[None], [batch, 1]), "")
        return {
            "sentiment_label": tf.gather(classes, tf.argmax(probs, axis=1)),
            "sentiment_probabilities": probs,
            "sentiment_classes": tf.tile(classes[None], [batch, 1]),
            "chunk_tags": tags,
            "length_value": tf.cast(num_words, tf.float32) / 10.0,
            "topics_labels": topic_labels,
            "topics_probabilities": topic_probs,
            "topics_classes": tf.tile(topic_classes[None], [batch, 1]),
            "num_words": num_words,
            "truncated": num_words > MAX_WORDS,
        }


def _write_metadata(version_dir: Path, **extra) -> None:
    info = {"name": MODEL_NAME, "tasks": TASKS, "max_sequence_length": MAX_WORDS,
            "backend": "tensorflow", **extra}
    (version_dir / "assets.extra").mkdir(parents=True, exist_ok=True)
    (version_dir / "assets.extra" / "keras_mtl.json").write_text(json.dumps(info))


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory) -> Path:
    """saved_models/tiny/1/ (read-only for tests: copy it before writing)."""
    base = tmp_path_factory.mktemp("saved_models") / MODEL_NAME
    module = _Tiny()
    tf.saved_model.save(module, str(base / "1"),
                        signatures={"serving_default": module.serve})
    _write_metadata(base / "1")
    return base


@pytest.fixture(scope="session")
def signature(tiny_export):
    return tf.saved_model.load(str(tiny_export / "1")).signatures["serving_default"]


def _run_signature(signature, texts) -> dict[str, np.ndarray]:
    data = [t.encode("utf-8") if isinstance(t, str) else t for t in texts]
    return {k: v.numpy() for k, v in signature(text=tf.constant(data, tf.string)).items()}


@pytest.fixture()
def export_copy(tiny_export, tmp_path) -> Path:
    dest = tmp_path / MODEL_NAME
    shutil.copytree(tiny_export, dest)
    return dest


# ---------------------------------------------------------------------------
# outputs_to_predictions


def test_outputs_to_predictions_on_direct_signature_call(signature):
    preds = outputs_to_predictions(_run_signature(signature, TEXTS))
    assert preds[0] == {
        "chunk": {"tags": ["B-NP", "O", "O", "O"]},
        "length": {"value": 0.4},
        "sentiment": {"label": "pos", "probabilities": {"neg": 0.100000024, "pos": 0.9}},
        "topics": {"labels": ["food"],
                   "probabilities": {"food": 0.8, "film": 0.05, "other": 0.3}},
        "_meta": {"num_words": 4, "truncated": False},
    }
    assert preds[1]["sentiment"]["label"] == "neg"
    assert preds[1]["chunk"] == {"tags": ["O", "O", "O"]}  # cut to num_words
    assert preds[2]["chunk"] == {"tags": []}
    assert preds[2]["topics"]["labels"] == ["other"]
    assert preds[3]["_meta"] == {"num_words": 7, "truncated": True}
    assert preds[3]["topics"]["labels"] == ["food"]  # "Film" is not "film"
    # plain JSON types only
    json.dumps(preds)
    assert type(preds[0]["_meta"]["truncated"]) is bool


def test_outputs_to_predictions_explicit_tasks_and_lists():
    outputs = {  # as decoded from REST JSON: lists and str
        "t_label": ["b", "a"],
        "t_probabilities": [[0.25, 0.75], [0.5, 0.5]],
        "t_classes": [["a", "b"], ["a", "b"]],
        "g_tags": [["X", "Y", ""], ["Z", "", ""]],
        "r_value": [1.5, -2.0],
        "extra_logits": [[1.0], [2.0]],
    }
    preds = outputs_to_predictions(outputs, {"t": "classification", "g": "tagging",
                                             "r": "regression"})
    assert preds[0] == {"t": {"label": "b", "probabilities": {"a": 0.25, "b": 0.75}},
                        "g": {"tags": ["X", "Y"]}, "r": {"value": 1.5}, "_meta": {}}
    assert preds[1]["g"] == {"tags": ["Z"]}  # no num_words: trailing "" dropped
    assert list(outputs_to_predictions(outputs)[0]) == ["g", "r", "t", "_meta"]
    assert list(preds[0]) == ["g", "r", "t", "_meta"]  # same order when tasks given


def test_outputs_to_predictions_float32_normalised():
    as_numpy = {"x_value": np.array([0.1, 1 / 3], np.float32)}
    as_json = {"x_value": [0.1, 0.33333334]}  # TF Serving REST writes float32 like this
    assert outputs_to_predictions(as_numpy) == outputs_to_predictions(as_json)
    assert outputs_to_predictions(as_numpy)[0]["x"]["value"] == 0.1


def test_outputs_to_predictions_errors():
    with pytest.raises(ServingError, match="batch dimension"):
        outputs_to_predictions({"a_value": [1.0, 2.0], "num_words": [1]})
    with pytest.raises(ServingError, match="needs output 'c_probabilities'"):
        outputs_to_predictions({"c_label": ["x"]}, {"c": "classification"})
    with pytest.raises(ServingError, match="unknown type"):
        outputs_to_predictions({"c_label": ["x"]}, {"c": "ranking"})
    with pytest.raises(ServingError, match="no task outputs"):
        outputs_to_predictions({"num_words": [1]})
    with pytest.raises(ServingError, match="no outputs"):
        outputs_to_predictions({})


def test_validate_texts():
    assert validate_texts(("a", b"b", bytearray(b"c"))) == ["a", b"b", b"c"]
    with pytest.raises(ServingError, match="no texts given"):
        validate_texts([])
    with pytest.raises(ServingError, match="index 1 is int"):
        validate_texts(["ok", 3])
    with pytest.raises(ServingError, match="single str"):
        validate_texts("one text")
    with pytest.raises(ServingError, match="index 0 is not valid Unicode"):
        validate_texts(["\udcff"])


# ---------------------------------------------------------------------------
# config files


def _config_messages():
    """TF Serving's config message classes (BatchingParameters and
    MonitoringConfig are not in the tensorflow-serving-api wheel: then they are
    rebuilt from the upstream .proto definitions, same names and numbers)."""
    from tensorflow_serving.config import model_server_config_pb2

    try:
        from tensorflow_serving.config import monitoring_config_pb2
        from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2

        return (model_server_config_pb2.ModelServerConfig,
                session_bundle_config_pb2.BatchingParameters,
                monitoring_config_pb2.MonitoringConfig)
    except ImportError:
        pass
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    field = descriptor_pb2.FieldDescriptorProto
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="keras_mtl_test/serving_configs.proto", package="tensorflow.serving",
        syntax="proto3", dependency=["google/protobuf/wrappers.proto"])
    # tensorflow_serving/servables/tensorflow/session_bundle_config.proto
    batching = proto.message_type.add(name="BatchingParameters")
    for number, (name, wrapper) in enumerate([
            ("max_batch_size", "Int64Value"), ("batch_timeout_micros", "Int64Value"),
            ("max_enqueued_batches", "Int64Value"), ("num_batch_threads", "Int64Value"),
            ("thread_pool_name", "StringValue")], start=1):
        batching.field.add(name=name, number=number, type=field.TYPE_MESSAGE,
                           type_name=f".google.protobuf.{wrapper}",
                           label=field.LABEL_OPTIONAL)
    batching.field.add(name="allowed_batch_sizes", number=6, type=field.TYPE_INT64,
                       label=field.LABEL_REPEATED)
    batching.field.add(name="pad_variable_length_inputs", number=7,
                       type=field.TYPE_BOOL, label=field.LABEL_OPTIONAL)
    # tensorflow_serving/config/monitoring_config.proto
    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=field.TYPE_BOOL,
                         label=field.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=field.TYPE_STRING,
                         label=field.LABEL_OPTIONAL)
    monitoring = proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(name="prometheus_config", number=1, type=field.TYPE_MESSAGE,
                         type_name=".tensorflow.serving.PrometheusConfig",
                         label=field.LABEL_OPTIONAL)
    pool.AddSerializedFile(proto.SerializeToString())

    def cls(name):
        return message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))

    return (model_server_config_pb2.ModelServerConfig, cls("BatchingParameters"),
            cls("MonitoringConfig"))


def _parse(text: str, message_class):
    from google.protobuf import text_format

    return text_format.Parse(text, message_class())


def test_write_serving_files_are_valid_tf_serving_configs(export_copy):
    shutil.copytree(export_copy / "1", export_copy / "3")
    written = write_serving_files(export_copy, num_batch_threads=2)
    assert set(written) == {"model_config", "model_config_local",
                            "batching_config", "monitoring_config"}
    assert all(p.parent == export_copy for p in written.values())
    server_cls, batching_cls, monitoring_cls = _config_messages()

    docker_cfg = _parse(written["model_config"].read_text(), server_cls)
    (config,) = docker_cfg.model_config_list.config
    assert config.name == MODEL_NAME
    assert config.base_path == f"/models/{MODEL_NAME}"
    assert config.model_platform == "tensorflow"
    assert list(config.model_version_policy.specific.versions) == [3]
    assert dict(config.version_labels) == {"stable": 3}

    local_cfg = _parse(written["model_config_local"].read_text(), server_cls)
    assert local_cfg.model_config_list.config[0].base_path == str(export_copy.resolve())

    batching = _parse(written["batching_config"].read_text(), batching_cls)
    assert batching.max_batch_size.value == 32
    assert batching.batch_timeout_micros.value == 2000
    assert batching.max_enqueued_batches.value == 100
    assert batching.num_batch_threads.value == 2
    assert batching.pad_variable_length_inputs is True

    monitoring = _parse(written["monitoring_config"].read_text(), monitoring_cls)
    assert monitoring.prometheus_config.enable is True
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"


def test_model_config_policies_and_labels(export_copy, tmp_path):
    for v in ("2", "10"):
        shutil.copytree(export_copy / "1", export_copy / v)
    assert find_versions(export_copy) == [1, 2, 10]
    server_cls, _, _ = _config_messages()
    written = write_serving_files(export_copy, out_dir=tmp_path / "cfg", model_name="m-2",
                                  version_labels={"stable": 2, "canary": 10},
                                  batching=False, monitoring=False)
    assert set(written) == {"model_config", "model_config_local"}
    config = _parse(written["model_config"].read_text(), server_cls).model_config_list.config[0]
    assert config.name == "m-2"
    assert list(config.model_version_policy.specific.versions) == [2, 10]
    assert dict(config.version_labels) == {"stable": 2, "canary": 10}

    text = model_config_text("m", "/x", latest_versions=2, version_labels={"stable": 10})
    config = _parse(text, server_cls).model_config_list.config[0]
    assert config.model_version_policy.latest.num_versions == 2
    _parse(batching_config_text(num_batch_threads=1), _config_messages()[1])
    _parse(monitoring_config_text(), _config_messages()[2])

    with pytest.raises(ServingError, match="no such version"):
        write_serving_files(export_copy, version_labels={"stable": 7})
    with pytest.raises(ServingError, match="not served"):
        write_serving_files(export_copy, version_labels={"stable": 1}, latest_versions=1)
    with pytest.raises(ServingError, match="model name"):
        write_serving_files(export_copy, model_name="bad name")


def test_missing_version_dir_is_model_error(tmp_path, export_copy):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"empty.*found nothing"):
        write_serving_files(tmp_path / "empty")
    (tmp_path / "nopb" / "1").mkdir(parents=True)
    (tmp_path / "nopb" / "notes.txt").write_text("x")
    with pytest.raises(ModelError, match=r"without saved_model.pb: 1.*notes.txt"):
        write_serving_files(tmp_path / "nopb")
    with pytest.raises(ModelError, match="pass its parent"):
        write_serving_files(export_copy / "1")
    with pytest.raises(ModelError, match="does not exist"):
        write_serving_files(tmp_path / "missing")


# ---------------------------------------------------------------------------
# commands and serve()


def test_serve_and_docker_commands(export_copy, tmp_path):
    cmd = serve_command(export_copy, port=9000, rest_port=9001)
    cfg = export_copy.resolve()
    assert cmd == [
        "tensorflow_model_server", "--port=9000", "--rest_api_port=9001",
        f"--model_config_file={cfg}/models.local.config",
        "--allow_version_labels_for_unavailable_models=true",
        "--enable_batching=true", f"--batching_parameters_file={cfg}/batching.config",
        f"--monitoring_config_file={cfg}/monitoring.config",
    ]
    docker = docker_command(export_copy, port=9000, rest_port=9001, image="tensorflow/serving:x")
    assert docker[:12] == [
        "docker", "run", "--rm", "-p", "9000:8500", "-p", "9001:8501",
        "-v", f"{cfg}:/models/tiny", "-e", "MODEL_NAME=tiny", "tensorflow/serving:x",
    ]
    assert "--model_config_file=/models/tiny/models.config" in docker
    assert "--xla_cpu_compilation_enabled=true" not in docker
    assert re.fullmatch(r"tensorflow/serving:\d+\.\d+.*", docker_command(export_copy)[11])
    elsewhere = docker_command(export_copy, config_dir=tmp_path / "cfg", xla=True)
    assert f"{(tmp_path / 'cfg').resolve()}:/keras_mtl_serving" in elsewhere
    assert "--model_config_file=/keras_mtl_serving/models.config" in elsewhere
    assert elsewhere[-1] == "--xla_cpu_compilation_enabled=true"
    with pytest.raises(ServingError, match="must differ"):
        serve_command(export_copy, port=8500, rest_port=8500)


def test_serve_dry_run_prints_docker_command(export_copy, capsys, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert serve(export_copy, port=8600, rest_port=8601, dry_run=True) == 0
    out = capsys.readouterr().out
    assert (export_copy / "models.config").is_file()
    assert f"wrote {export_copy / 'models.config'}" in out
    docker_line = next(line for line in out.splitlines() if "docker run" in line)
    argv = shlex.split(docker_line)
    assert argv[argv.index("-v") + 1] == f"{export_copy.resolve()}:/models/tiny"
    assert "8600:8500" in argv and "8601:8501" in argv
    assert "--model_config_file=/models/tiny/models.config" in argv
    assert "--enable_batching=true" in argv
    assert "http://localhost:8601/v1/models/tiny" in out
    assert "xla" not in out


def test_serve_jax_export_adds_xla_flag(export_copy, capsys, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    _write_metadata(export_copy / "1", backend="jax")
    assert serve(export_copy, dry_run=True) == 0
    out = capsys.readouterr().out
    assert "JAX backend" in out
    docker_line = next(line for line in out.splitlines() if "docker run" in line)
    assert "--xla_cpu_compilation_enabled=true" in shlex.split(docker_line)
    assert "--xla_cpu_compilation_enabled=true" in serve_command(export_copy)


def test_serve_runs_local_binary(export_copy, tmp_path, monkeypatch):
    """With tensorflow_model_server on PATH, serve() runs it and returns its code."""
    record = tmp_path / "argv.json"
    fake = tmp_path / "tensorflow_model_server"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    f"json.dump(sys.argv[1:], open({str(record)!r}, 'w'))\nsys.exit(3)\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    out = io.StringIO()
    assert serve(export_copy, port=8700, rest_port=8701, stream=out) == 3
    argv = json.loads(record.read_text())
    assert argv[:2] == ["--port=8700", "--rest_api_port=8701"]
    assert f"--model_config_file={export_copy.resolve()}/models.local.config" in argv
    assert "starting:" in out.getvalue()


# ---------------------------------------------------------------------------
# a fake TF Serving REST server


def _tfs_float(value) -> float:
    """float32 as TF Serving's REST writes it (json_tensor.cc WriteDecimal):
    printf %g, or %.9g when that does not round-trip."""
    value = np.float32(value)
    if not np.isfinite(value):
        return float(value)
    text = "%g" % value
    if np.float32(float(text)) != value:
        text = "%.9g" % value
    return float(text)


def _to_json(value, is_float32: bool):
    if isinstance(value, list):
        return [_to_json(v, is_float32) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if is_float32:
        return _tfs_float(value)
    return value


def _from_json(value):
    if isinstance(value, dict):
        if set(value) != {"b64"}:
            raise ValueError(f"JSON Value: {json.dumps(value)} not formatted correctly for base64 data")
        return base64.b64decode(value["b64"])
    if not isinstance(value, str):
        raise ValueError(f"JSON Value: {json.dumps(value)} Type: Number is not of expected type: string")
    return value.encode("utf-8")


class _FakeRestHandler(BaseHTTPRequestHandler):
    server: "_FakeRestServer"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out
            pass

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(length)
        srv = self.server
        match = re.fullmatch(
            r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:predict", self.path)
        if not match:
            return self._answer(404, {"error": f"Malformed request: POST {self.path}"})
        name, version, label = match.groups()
        if name != srv.model_name or (version and version != "1") or (
                label and label != "stable"):
            return self._answer(404, {"error": f"Servable not found for request: Latest({name})"})
        try:
            body = json.loads(raw)
        except ValueError:
            return self._answer(400, {"error": "JSON Parse error: Invalid value"})
        srv.received.append({"path": self.path,
                             "content_type": self.headers.get("Content-Type"),
                             "body": body})
        if srv.delay:
            time.sleep(srv.delay)
        signature_name = body.get("signature_name", "serving_default")
        if signature_name != "serving_default":
            return self._answer(400, {"error": f'Serving signature name: "{signature_name}" '
                                               "not found in signature def"})
        try:
            if ("instances" in body) == ("inputs" in body):
                raise ValueError("Missing 'inputs' or 'instances' key" if "inputs" not in body
                                 else "Not both 'inputs' and 'instances' can be specified")
            if "instances" in body:
                rows = [r["text"] if isinstance(r, dict) else r for r in body["instances"]]
            else:
                inputs = body["inputs"]
                rows = inputs["text"] if isinstance(inputs, dict) else inputs
            texts = [_from_json(v) for v in rows]
        except (ValueError, KeyError, TypeError) as err:
            return self._answer(400, {"error": str(err)})
        if srv.max_batch_size is not None and len(texts) > srv.max_batch_size:
            # with --enable_batching (shared_batch_scheduler.h)
            return self._answer(400, {"error": f"Task size {len(texts)} is larger than "
                                               f"maximum input batch size {srv.max_batch_size}"})
        outputs = _run_signature(srv.signature, texts)
        floats = {k: v.dtype == np.float32 for k, v in outputs.items()}
        if "instances" in body:
            predictions = [
                {k: _to_json(v[i].tolist() if hasattr(v[i], "tolist") else v[i], floats[k])
                 for k, v in outputs.items()}
                for i in range(len(texts))
            ]
            return self._answer(200, {"predictions": predictions})
        return self._answer(200, {"outputs": {k: _to_json(v.tolist(), floats[k])
                                              for k, v in outputs.items()}})


class _FakeRestServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, signature):
        super().__init__(("127.0.0.1", 0), _FakeRestHandler)
        self.signature = signature
        self.model_name = MODEL_NAME
        self.received: list[dict] = []
        self.delay = 0.0
        # as `keras-mtl serve` configures TF Serving (batching.config)
        self.max_batch_size: int | None = DEFAULT_MAX_BATCH_SIZE

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/models/{self.model_name}"


@pytest.fixture()
def rest_server(signature, serving_in_thread):
    with serving_in_thread(_FakeRestServer(signature)) as server:
        yield server


def test_rest_row_and_columnar_match_direct_call(rest_server, signature):
    expected = outputs_to_predictions(_run_signature(signature, TEXTS))
    rows = predict_rest(rest_server.url, TEXTS, format="instances", timeout=10)
    columns = predict_rest(rest_server.url, TEXTS, format="inputs", timeout=10)
    assert rows == expected
    assert columns == expected
    assert json.dumps(rows) == json.dumps(expected)  # same key order, same floats

    row_req, col_req = rest_server.received
    assert row_req["path"] == f"/v1/models/{MODEL_NAME}:predict"
    assert row_req["content_type"] == "application/json"
    assert row_req["body"] == {"signature_name": "serving_default",
                               "instances": [{"text": t} for t in TEXTS]}
    assert col_req["body"] == {"signature_name": "serving_default",
                               "inputs": {"text": TEXTS}}


def test_rest_versions_labels_and_bytes(rest_server, signature):
    texts = [b"caf\xe9 good \xff", "na\u00efve good"]  # latin-1 bytes, not UTF-8
    expected = outputs_to_predictions(_run_signature(signature, texts))
    assert expected[0]["sentiment"]["label"] == "pos"
    for suffix in ("/versions/1", "/labels/stable/", "/versions/1:predict"):
        assert predict_rest(rest_server.url + suffix, texts, timeout=10) == expected
    assert rest_server.received[0]["body"]["instances"] == [
        {"text": {"b64": base64.b64encode(b"caf\xe9 good \xff").decode()}},
        {"text": "na\u00efve good"},
    ]
    assert predict_rest(rest_server.url, texts, format="inputs", timeout=10) == expected
    assert predict_remote(rest_server.url, texts, timeout=10) == expected
    assert predict_rest(rest_server.url, TEXTS[:1], tasks=TASKS, timeout=10)[0][
        "sentiment"]["label"] == "pos"


def test_rest_errors(rest_server, signature):
    with pytest.raises(ServingError, match=r"HTTP 404: Servable not found .*Latest\(nope\)"):
        predict_rest(rest_server.url.replace("/tiny", "/nope"), ["x"], timeout=10)
    with pytest.raises(ServingError, match=r'HTTP 400: Serving signature name: "other"'):
        predict_rest(rest_server.url, ["x"], signature_name="other", timeout=10)
    assert [r["body"]["signature_name"] for r in rest_server.received] == ["other"]
    rest_server.received.clear()
    with pytest.raises(ServingError, match="no texts given"):
        predict_rest(rest_server.url, [], timeout=10)
    with pytest.raises(ServingError, match="index 1 is NoneType"):
        predict_rest(rest_server.url, ["x", None], timeout=10)
    with pytest.raises(ServingError, match="format must be"):
        predict_rest(rest_server.url, ["x"], format="rows", timeout=10)
    with pytest.raises(ServingError, match="not of the form"):
        predict_rest("http://127.0.0.1:1/models/tiny", ["x"], timeout=10)
    with pytest.raises(ServingError, match="unsupported serving url"):
        predict_remote("ftp://127.0.0.1/tiny", ["x"])
    assert rest_server.received == []  # invalid requests are not sent
    rest_server.delay = 1.0
    with pytest.raises(ServingError, match="did not answer within 0.2 s"):
        predict_rest(rest_server.url, ["x"], timeout=0.2)


def test_rest_unreachable_server():
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ServingError, match="cannot reach TF Serving"):
        predict_rest(f"http://127.0.0.1:{port}/v1/models/tiny", ["x"], timeout=5)


# ---------------------------------------------------------------------------
# a fake TF Serving gRPC server


class _Received(list):
    """The requests a fake gRPC server got, and its batching limit."""

    max_batch_size: int | None = DEFAULT_MAX_BATCH_SIZE


@pytest.fixture()
def grpc_server(signature):
    grpc = pytest.importorskip("grpc")
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    received = _Received()

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802
            received.append(request)
            spec = request.model_spec
            if spec.name != MODEL_NAME or spec.version_label not in ("", "stable") or (
                    spec.HasField("version") and spec.version.value != 1):
                context.abort(grpc.StatusCode.NOT_FOUND,
                              f"Servable not found for request: Latest({spec.name})")
            if spec.signature_name not in ("", "serving_default"):
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              f'Serving signature name: "{spec.signature_name}" not found')
            texts = tf.make_ndarray(request.inputs["text"]).tolist()
            limit = received.max_batch_size
            if limit is not None and len(texts) > limit:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"Task size {len(texts)} is larger than maximum input batch size {limit}")
            response = predict_pb2.PredictResponse()
            response.model_spec.name = MODEL_NAME
            response.model_spec.version.value = 1
            response.model_spec.signature_name = "serving_default"
            for key, value in _run_signature(signature, texts).items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", received
    finally:
        server.stop(grace=None).wait(5)


def test_grpc_matches_direct_call(grpc_server, signature):
    target, received = grpc_server
    texts = TEXTS + [b"caf\xe9 good \xff"]
    expected = outputs_to_predictions(_run_signature(signature, texts))
    assert predict_grpc(target, MODEL_NAME, texts, timeout=10) == expected
    request = received[0]
    assert request.model_spec.name == MODEL_NAME
    assert request.model_spec.signature_name == "serving_default"
    proto = request.inputs["text"]
    assert proto.dtype == tf.string.as_datatype_enum
    assert [d.size for d in proto.tensor_shape.dim] == [len(texts)]
    assert list(proto.string_val)[-1] == b"caf\xe9 good \xff"

    assert predict_grpc(target, MODEL_NAME, texts, version=1, timeout=10) == expected
    assert received[-1].model_spec.version.value == 1
    assert predict_remote(f"grpc://{target}/{MODEL_NAME}/labels/stable", texts,
                          timeout=10) == expected
    assert received[-1].model_spec.version_label == "stable"


def test_grpc_errors(grpc_server, monkeypatch):
    target, received = grpc_server
    with pytest.raises(ServingError, match=r"NOT_FOUND: Servable not found .*Latest\(nope\)"):
        predict_grpc(target, "nope", ["x"], timeout=10)
    with pytest.raises(ServingError, match="no texts given"):
        predict_grpc(target, MODEL_NAME, [], timeout=10)
    with pytest.raises(ServingError, match="not of the form"):
        predict_remote(f"grpc://{target}", ["x"])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ServingError, match="cannot reach|did not answer"):
        predict_grpc(f"127.0.0.1:{port}", MODEL_NAME, ["x"], timeout=3)
    monkeypatch.setitem(sys.modules, "tensorflow_serving.apis", None)
    with pytest.raises(ServingError, match=r"pip install keras-mtl\[serving\]"):
        predict_grpc(target, MODEL_NAME, ["x"], timeout=10)


# ---------------------------------------------------------------------------
# request sizes: the clients never send more than batching.config allows

MANY = [f"text {i}" + " good" * (i % 2) + " Food" * (i % 3) + " film" * (i % 5 == 0)
        for i in range(100)]


def _sizes_rest(server) -> list[int]:
    out = []
    for r in server.received:
        body = r["body"]
        out.append(len(body["instances"]) if "instances" in body else len(body["inputs"]["text"]))
    return out


def test_rest_client_splits_large_inputs(rest_server, signature):
    expected = outputs_to_predictions(_run_signature(signature, MANY))
    assert [p["_meta"]["num_words"] for p in expected] == [len(t.split()) for t in MANY]
    for fmt in ("instances", "inputs"):
        rest_server.received.clear()
        assert predict_rest(rest_server.url, MANY, format=fmt, timeout=10) == expected
        assert _sizes_rest(rest_server) == [32, 32, 32, 4]
        assert max(_sizes_rest(rest_server)) <= DEFAULT_MAX_BATCH_SIZE
    rest_server.max_batch_size = 7
    rest_server.received.clear()
    assert predict_remote(rest_server.url, MANY, timeout=10, max_batch_size=7) == expected
    assert _sizes_rest(rest_server) == [7] * 14 + [2]
    sent = [r["body"]["instances"] for r in rest_server.received]
    assert [row["text"] for rows in sent for row in rows] == MANY  # in order, each once
    # a server with a smaller limit than the client's: one line, with the fix
    rest_server.received.clear()
    with pytest.raises(ServingError) as info:
        predict_rest(rest_server.url, MANY, timeout=10)
    message = str(info.value)
    assert "\n" not in message
    assert "HTTP 400 (request for texts 1-32 of 100): Task size 32 is larger than" in message
    assert "pass max_batch_size=7" in message
    assert len(rest_server.received) == 1  # stops at the first refused request
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ServingError, match="max_batch_size must be an integer >= 1"):
            predict_rest(rest_server.url, MANY, max_batch_size=bad)


def test_rest_client_chunks_with_patched_transport(monkeypatch):
    """No server: the POSTed payloads themselves, at the urllib boundary."""
    posted = []

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    class Opener:
        def open(self, request, timeout):
            body = json.loads(request.data)
            posted.append(body)
            texts = [row["text"] for row in body["instances"]]
            return Response(json.dumps({"predictions": [
                {"t_value": float(t.split()[1]), "num_words": len(t.split())} for t in texts
            ]}).encode())

    monkeypatch.setattr(urllib.request, "build_opener", lambda *handlers: Opener())
    preds = predict_rest("http://127.0.0.1:1/v1/models/m", MANY)
    assert [len(b["instances"]) for b in posted] == [32, 32, 32, 4]
    assert [p["t"]["value"] for p in preds] == [float(i) for i in range(100)]


def test_grpc_client_splits_large_inputs(grpc_server, signature):
    target, received = grpc_server
    expected = outputs_to_predictions(_run_signature(signature, MANY))
    assert predict_grpc(target, MODEL_NAME, MANY, timeout=10) == expected
    sizes = [r.inputs["text"].tensor_shape.dim[0].size for r in received]
    assert sizes == [32, 32, 32, 4]
    assert [t.decode() for r in received for t in r.inputs["text"].string_val] == MANY
    received.clear()
    received.max_batch_size = 10
    assert predict_remote(f"grpc://{target}/{MODEL_NAME}", MANY, timeout=10,
                          max_batch_size=10) == expected
    assert [r.inputs["text"].tensor_shape.dim[0].size for r in received] == [10] * 10
    with pytest.raises(ServingError) as info:
        predict_grpc(target, MODEL_NAME, MANY, timeout=10)
    assert "INVALID_ARGUMENT (request for texts 1-32 of 100)" in str(info.value)
    assert "pass max_batch_size=10" in str(info.value)


def test_batching_config_and_clients_agree(export_copy, rest_server, signature):
    """batching.config's max_batch_size is what the clients send at most."""
    _, batching_cls, _ = _config_messages()
    written = write_serving_files(export_copy, num_batch_threads=1)
    parsed = _parse(written["batching_config"].read_text(), batching_cls)
    assert parsed.max_batch_size.value == DEFAULT_MAX_BATCH_SIZE
    assert read_max_batch_size(export_copy) == DEFAULT_MAX_BATCH_SIZE
    assert read_max_batch_size(written["batching_config"]) == DEFAULT_MAX_BATCH_SIZE
    # no large-batch splitting (it would concatenate T_tags of different widths)
    assert "enable_large_batch_splitting {" not in written["batching_config"].read_text()
    assert "max_execution_batch_size {" not in written["batching_config"].read_text()

    written = write_serving_files(export_copy, max_batch_size=9, num_batch_threads=1)
    limit = read_max_batch_size(export_copy)
    assert limit == _parse(written["batching_config"].read_text(), batching_cls).max_batch_size.value == 9
    rest_server.max_batch_size = limit
    expected = outputs_to_predictions(_run_signature(signature, MANY))
    assert predict_rest(rest_server.url, MANY, timeout=10, max_batch_size=limit) == expected
    assert max(_sizes_rest(rest_server)) == 9
    assert read_max_batch_size(export_copy / "missing") is None


def test_serve_prints_request_limit(export_copy, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    out = io.StringIO()
    assert serve(export_copy, dry_run=True, stream=out, max_batch_size=16) == 0
    assert "at most 16 texts per request" in out.getvalue()
    assert read_max_batch_size(export_copy) == 16


# ---------------------------------------------------------------------------
# a real TF Serving, when installed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_real_tensorflow_model_server(export_copy, signature, tmp_path):
    binary = shutil.which("tensorflow_model_server")
    if binary is None:
        pytest.skip("tensorflow_model_server is not on PATH (TF Serving has no pip/apt "
                    "package here); install it or run the docker command printed by "
                    "`keras-mtl serve --dry-run`")
    port, rest_port = _free_port(), _free_port()
    write_serving_files(export_copy, num_batch_threads=1)
    argv = serve_command(export_copy, port, rest_port)
    argv[0] = binary
    log = open(tmp_path / "tensorflow_model_server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    status_url = f"http://127.0.0.1:{rest_port}/v1/models/{MODEL_NAME}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                log.flush()
                tail = (tmp_path / "tensorflow_model_server.log").read_bytes()[-2000:]
                pytest.fail(f"tensorflow_model_server exited: {tail.decode(errors='replace')}")
            try:
                with urllib.request.urlopen(status_url, timeout=2) as response:
                    states = json.load(response)["model_version_status"]
                if any(s["state"] == "AVAILABLE" for s in states):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("tensorflow_model_server did not load the model in 60 s")
            time.sleep(0.5)
        expected = outputs_to_predictions(_run_signature(signature, TEXTS))
        assert predict_rest(status_url, TEXTS, timeout=30) == expected
        assert predict_rest(status_url + "/labels/stable", TEXTS, format="inputs",
                            timeout=30) == expected
        assert predict_remote(f"grpc://127.0.0.1:{port}/{MODEL_NAME}", TEXTS,
                              timeout=30) == expected
        with urllib.request.urlopen(
                f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics", timeout=5) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
