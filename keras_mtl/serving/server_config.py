"""TF Serving config files and the commands that start a server.

`write_serving_files` writes, next to the integer version dirs of an export
(the model base; file names and layout: `keras_mtl.serving.layout`):

- `models.config` (ModelServerConfig, text format) with
  `base_path: "/models/<name>"`, the path the Docker command mounts the export
  at, and `models.local.config`, the same with the absolute host path, for a
  `tensorflow_model_server` binary on this machine;
- `batching.config` (BatchingParameters) for `--enable_batching`; its
  `max_batch_size` (32 by default) is also the most texts TF Serving takes in
  one request, and the keras-mtl clients send requests no larger than that;
- `monitoring.config` (MonitoringConfig): Prometheus metrics on the REST port.

The version policy is `specific` (the labelled versions plus the latest),
so a newly exported version is served after the files are written again
(`keras-mtl serve`), or pass `latest_versions=K` to have TF Serving pick up
the K newest versions by itself.

Flags used (all from tensorflow_serving/model_servers/main.cc):
`--port --rest_api_port --model_config_file --enable_batching
--batching_parameters_file --monitoring_config_file
--allow_version_labels_for_unavailable_models --xla_cpu_compilation_enabled`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

from keras_mtl.errors import ServingError
from keras_mtl.serving.layout import (
    BATCHING_CONFIG,
    LOCAL_MODEL_CONFIG,
    MODEL_CONFIG,
    MONITORING_CONFIG,
    find_versions,
    read_model_info,
)

PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
SERVER_BINARY = "tensorflow_model_server"
DOCKER_IMAGE = "tensorflow/serving"
CONTAINER_MODELS_DIR = "/models"
# where the config dir is mounted when it is not the model base itself
CONTAINER_CONFIG_DIR = "/keras_mtl_serving"
XLA_FLAG = "--xla_cpu_compilation_enabled=true"
JAX_BACKEND_NOTE = (
    "note: this model was exported from the JAX backend (jax2tf: XlaCallModule ops); "
    "TF Serving disables XLA:CPU JIT unless started with "
    f"{XLA_FLAG}, so that flag is added to the commands below"
)

# batching.config max_batch_size: the largest batch TF Serving runs and, with
# batching on, the most texts it accepts in one request. The clients
# (keras_mtl.serving.client) send at most this many texts per request.
DEFAULT_MAX_BATCH_SIZE = 32
_MAX_BATCH_SIZE_RE = re.compile(r"^\s*max_batch_size\s*:?\s*\{\s*value\s*:\s*(\d+)\s*\}", re.M)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_LABEL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def _model_name(model_base: Path, model_name: str | None, info: Mapping) -> str:
    name = model_name or info.get("name") or model_base.resolve().name
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ServingError(
            f"model name {name!r} cannot be used in TF Serving URLs; use letters, "
            "digits, '.', '_' and '-' (pass model_name=...)"
        )
    return name


def _needs_xla(info: Mapping) -> bool:
    return str(info.get("backend", "")).lower() == "jax"


# --------------------------------------------------------------------------
# config text


def _quote(value: str) -> str:
    """A protobuf text-format string literal (UTF-8 kept as is)."""
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"')
        .replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    )
    return f'"{escaped}"'


def model_config_text(
    name: str,
    base_path: str,
    versions: Sequence[int] | None = None,
    version_labels: Mapping[str, int] | None = None,
    latest_versions: int | None = None,
) -> str:
    """ModelServerConfig text for one model.

    `versions` -> `model_version_policy { specific { versions: ... } }`;
    `latest_versions=K` -> `{ latest { num_versions: K } }`; neither -> TF
    Serving's default (the latest version).
    """
    lines = [
        "# TF Serving ModelServerConfig (text format), written by keras-mtl.",
        "# Use with --model_config_file=<this file> "
        "--allow_version_labels_for_unavailable_models=true",
        "model_config_list {",
        "  config {",
        f"    name: {_quote(name)}",
        f"    base_path: {_quote(base_path)}",
        '    model_platform: "tensorflow"',
    ]
    if versions and latest_versions:
        raise ServingError("give either versions or latest_versions, not both")
    if versions:
        lines += ["    model_version_policy {", "      specific {"]
        lines += [f"        versions: {int(v)}" for v in versions]
        lines += ["      }", "    }"]
    elif latest_versions:
        lines += [
            "    model_version_policy {",
            f"      latest {{ num_versions: {int(latest_versions)} }}",
            "    }",
        ]
    for label, version in (version_labels or {}).items():
        lines += [
            "    version_labels {",
            f"      key: {_quote(label)}",
            f"      value: {int(version)}",
            "    }",
        ]
    lines += ["  }", "}", ""]
    return "\n".join(lines)


def batching_config_text(
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    batch_timeout_micros: int = 2000,
    max_enqueued_batches: int = 100,
    num_batch_threads: int | None = None,
) -> str:
    """BatchingParameters text for --batching_parameters_file."""
    threads = num_batch_threads or os.cpu_count() or 1
    for field, value in (("max_batch_size", max_batch_size),
                         ("batch_timeout_micros", batch_timeout_micros),
                         ("max_enqueued_batches", max_enqueued_batches),
                         ("num_batch_threads", threads)):
        if int(value) < (0 if field == "batch_timeout_micros" else 1):
            raise ServingError(f"batching {field} must be positive, got {value}")
    return "\n".join([
        "# TF Serving BatchingParameters (text format), written by keras-mtl.",
        "# Use with --enable_batching=true --batching_parameters_file=<this file>.",
        "# The input `text` is a [batch] string tensor: requests are concatenated",
        "# along dim 0 and never need padding. pad_variable_length_inputs is set",
        "# so that an input with a variable inner dimension is padded instead of",
        "# failing with \"... have different shapes and padding is turned off\".",
        "# Outputs such as T_tags [batch, words] are split back per request;",
        "# clients cut tags to num_words, so extra \"\" padding is harmless.",
        "# max_batch_size is also the most texts one request may hold: TF Serving",
        "# refuses a larger one (\"Task size N is larger than maximum input batch",
        "# size M\"), and the keras-mtl REST/gRPC clients send requests of at most",
        "# max_batch_size texts (pass them the same value if you change it here).",
        "# enable_large_batch_splitting stays off: it would run a large request as",
        "# several batches and concatenate their outputs along dim 0, which fails",
        "# for T_tags [batch, words] when the batches have different word counts.",
        f"max_batch_size {{ value: {int(max_batch_size)} }}",
        f"batch_timeout_micros {{ value: {int(batch_timeout_micros)} }}",
        f"max_enqueued_batches {{ value: {int(max_enqueued_batches)} }}",
        f"num_batch_threads {{ value: {int(threads)} }}",
        "pad_variable_length_inputs: true",
        "",
    ])


def read_max_batch_size(path: str | os.PathLike) -> int | None:
    """`max_batch_size` of a batching.config (a file, or the dir holding one).

    None when there is no such file or it sets no max_batch_size (TF Serving
    then uses its own default).
    """
    path = Path(path)
    if path.is_dir():
        path = path / BATCHING_CONFIG
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ServingError(f"cannot read {path}: {err}") from None
    match = _MAX_BATCH_SIZE_RE.search(text)
    return int(match.group(1)) if match else None


def monitoring_config_text(path: str = PROMETHEUS_PATH) -> str:
    """MonitoringConfig text: Prometheus metrics at `path` on the REST port."""
    return "\n".join([
        "# TF Serving MonitoringConfig (text format), written by keras-mtl.",
        "# Use with --monitoring_config_file=<this file>; metrics are served on",
        "# the REST port (--rest_api_port) at the path below.",
        "prometheus_config {",
        "  enable: true",
        f"  path: {_quote(path)}",
        "}",
        "",
    ])


# --------------------------------------------------------------------------
# writing the files


def write_serving_files(
    model_base: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    model_name: str | None = None,
    version_labels: Mapping[str, int] | None = None,
    batching: bool = True,
    monitoring: bool = True,
    *,
    versions: Sequence[int] | None = None,
    latest_versions: int | None = None,
    container_base_path: str | None = None,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    batch_timeout_micros: int = 2000,
    max_enqueued_batches: int = 100,
    num_batch_threads: int | None = None,
) -> dict[str, Path]:
    """Write the TF Serving config files for an export; returns their paths.

    Args:
      model_base: `saved_models/<name>`, holding integer version dirs.
      out_dir: where to write (default: `model_base`).
      model_name: served name (default: keras_mtl.json "name", else the dir name).
      version_labels: label -> version (default `{"stable": <latest>}`;
        `{}` for none).
      versions: versions to serve (default: the labelled ones plus the latest).
      latest_versions: serve the K newest versions instead (labels must be among
        them).
      container_base_path: base_path in models.config (default `/models/<name>`).

    Returns:
      {"model_config": models.config (Docker paths),
       "model_config_local": models.local.config (host paths),
       "batching_config": ..., "monitoring_config": ...} (the last two only
      when enabled).
    """
    base = Path(model_base)
    found = find_versions(base)
    latest = found[-1]
    info = read_model_info(base, latest)
    name = _model_name(base, model_name, info)
    labels = {"stable": latest} if version_labels is None else dict(version_labels)
    for label, version in labels.items():
        if not isinstance(label, str) or not _LABEL_RE.match(label):
            raise ServingError(
                f"version label {label!r} must start with a letter and hold only "
                "letters, digits, '_' and '-'"
            )
        if not isinstance(version, int) or version not in found:
            raise ServingError(
                f"version label {label!r} -> {version!r}: no such version in {base} "
                f"(found {', '.join(map(str, found))})"
            )
    if latest_versions is not None:
        if versions is not None:
            raise ServingError("give either versions or latest_versions, not both")
        if latest_versions < 1:
            raise ServingError(f"latest_versions must be >= 1, got {latest_versions}")
        served = found[-latest_versions:]
        policy: dict[str, Any] = {"latest_versions": latest_versions}
    else:
        if versions is None:
            served = sorted({latest, *labels.values()})
        else:
            served = sorted({int(v) for v in versions})
            missing = [v for v in served if v not in found]
            if missing:
                raise ServingError(
                    f"versions {missing} not found in {base} "
                    f"(found {', '.join(map(str, found))})"
                )
        policy = {"versions": served}
    unserved = {k: v for k, v in labels.items() if v not in served}
    if unserved:
        raise ServingError(
            f"version labels {unserved} point to versions that are not served "
            f"(served: {', '.join(map(str, served))})"
        )

    out = Path(out_dir) if out_dir is not None else base
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ServingError(_cannot_write(out, err, out_dir)) from None
    docker_base = container_base_path or f"{CONTAINER_MODELS_DIR}/{name}"
    files = {
        "model_config": (out / MODEL_CONFIG,
                         model_config_text(name, docker_base, version_labels=labels, **policy)),
        "model_config_local": (out / LOCAL_MODEL_CONFIG,
                               model_config_text(name, str(base.resolve()),
                                                 version_labels=labels, **policy)),
    }
    if batching:
        files["batching_config"] = (out / BATCHING_CONFIG, batching_config_text(
            max_batch_size, batch_timeout_micros, max_enqueued_batches, num_batch_threads))
    if monitoring:
        files["monitoring_config"] = (out / MONITORING_CONFIG, monitoring_config_text())
    written: dict[str, Path] = {}
    for key, (path, text) in files.items():
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        except OSError as err:
            try:
                tmp.unlink(missing_ok=True)  # no half-written file left (a full disk)
            except OSError:
                pass
            raise ServingError(_cannot_write(path, err, out_dir)) from None
        written[key] = path
    return written


def _cannot_write(path: Path, err: OSError, out_dir) -> str:
    """One line: why `path` cannot be written, and where else the config files can go."""
    why = err.strerror or str(err)
    if out_dir is None:
        where = ("write the config files elsewhere: keras-mtl serve --config-dir DIR "
                 "(write_serving_files/serve: out_dir=DIR)")
    else:
        where = "pass another --config-dir (out_dir=)"
    return f"cannot write {path}: {why}; {where}"


# --------------------------------------------------------------------------
# commands


def _check_ports(port: int, rest_port: int) -> None:
    for flag, value in (("port", port), ("rest_port", rest_port)):
        if not isinstance(value, int) or not 0 < value < 65536:
            raise ServingError(f"{flag} must be an integer in 1..65535, got {value!r}")
    if port == rest_port:
        raise ServingError(f"port and rest_port must differ (both {port})")


def _server_flags(config_dir: str, model_config: str, batching: bool,
                  monitoring: bool, xla: bool) -> list[str]:
    flags = [
        f"--model_config_file={config_dir}/{model_config}",
        "--allow_version_labels_for_unavailable_models=true",
    ]
    if batching:
        flags += ["--enable_batching=true",
                  f"--batching_parameters_file={config_dir}/{BATCHING_CONFIG}"]
    if monitoring:
        flags.append(f"--monitoring_config_file={config_dir}/{MONITORING_CONFIG}")
    if xla:
        flags.append(XLA_FLAG)
    return flags


def serve_command(
    model_base: str | os.PathLike,
    port: int = 8500,
    rest_port: int = 8501,
    *,
    config_dir: str | os.PathLike | None = None,
    batching: bool = True,
    monitoring: bool = True,
    xla: bool | None = None,
    binary: str = SERVER_BINARY,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """argv for a local `tensorflow_model_server` (uses models.local.config).

    `xla=None`: add --xla_cpu_compilation_enabled=true when keras_mtl.json says
    backend "jax".
    """
    _check_ports(port, rest_port)
    base = Path(model_base)
    if xla is None:
        xla = _needs_xla(read_model_info(base))
    cfg = str(Path(config_dir or base).resolve())
    return [binary, f"--port={port}", f"--rest_api_port={rest_port}",
            *_server_flags(cfg, LOCAL_MODEL_CONFIG, batching, monitoring, xla),
            *extra_args]


def _docker_tag(info: Mapping) -> str:
    version = info.get("tensorflow_version") or info.get("tf_version")
    if not version:
        try:
            version = metadata.version("tensorflow")
        except metadata.PackageNotFoundError:
            return "latest"
    return str(version).split("+")[0]


def docker_command(
    model_base: str | os.PathLike,
    port: int = 8500,
    rest_port: int = 8501,
    *,
    model_name: str | None = None,
    config_dir: str | os.PathLike | None = None,
    batching: bool = True,
    monitoring: bool = True,
    xla: bool | None = None,
    image: str | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """argv for `docker run` of the tensorflow/serving image on this export.

    The image's entrypoint always listens on 8500 (gRPC) and 8501 (REST) in the
    container; `port`/`rest_port` are the host ports. The export is mounted at
    /models/<name> and models.config (Docker paths) is used. The image tag is
    keras_mtl.json's "tensorflow_version", else the installed TensorFlow's.
    """
    _check_ports(port, rest_port)
    base = Path(model_base).resolve()
    info = read_model_info(base)
    name = _model_name(base, model_name, info)
    if xla is None:
        xla = _needs_xla(info)
    container_base = f"{CONTAINER_MODELS_DIR}/{name}"
    argv = ["docker", "run", "--rm", "-p", f"{port}:8500", "-p", f"{rest_port}:8501",
            "-v", f"{base}:{container_base}"]
    cfg_host = Path(config_dir).resolve() if config_dir is not None else base
    if cfg_host == base:
        container_cfg = container_base
    else:
        container_cfg = CONTAINER_CONFIG_DIR
        argv += ["-v", f"{cfg_host}:{CONTAINER_CONFIG_DIR}"]
    argv += ["-e", f"MODEL_NAME={name}", image or f"{DOCKER_IMAGE}:{_docker_tag(info)}"]
    argv += _server_flags(container_cfg, MODEL_CONFIG, batching, monitoring, xla)
    return argv + list(extra_args)


def _run_forwarding_signals(argv: list[str]) -> int:
    proc = subprocess.Popen(argv)

    def forward(signum, _frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is not None:
                previous[sig] = signal.signal(sig, forward)
    try:
        rc = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return rc if rc >= 0 else 128 - rc


def serve(
    model_base: str | os.PathLike,
    port: int = 8500,
    rest_port: int = 8501,
    dry_run: bool = False,
    *,
    model_name: str | None = None,
    out_dir: str | os.PathLike | None = None,
    version_labels: Mapping[str, int] | None = None,
    batching: bool = True,
    monitoring: bool = True,
    jax_backend_note: str | None = JAX_BACKEND_NOTE,
    stream: TextIO | None = None,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
) -> int:
    """Write the config files, then start TF Serving or print how to.

    With `tensorflow_model_server` on PATH and not `dry_run`: runs it in the
    foreground (SIGINT/SIGTERM forwarded) and returns its exit code. Otherwise
    prints the `docker run` command (and the local one, when the binary exists)
    and returns 0. `jax_backend_note`: printed for a JAX-backend export (None:
    not printed; the XLA flag is added either way). `max_batch_size`: written
    to batching.config; with batching on, also the most texts per request.
    """
    out = stream or sys.stdout

    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    _check_ports(port, rest_port)
    base = Path(model_base)
    written = write_serving_files(base, out_dir, model_name, version_labels,
                                  batching, monitoring, max_batch_size=max_batch_size)
    info = read_model_info(base)
    name = _model_name(base, model_name, info)
    xla = _needs_xla(info)
    say(f"keras-mtl serve: model {name!r}, versions {', '.join(map(str, find_versions(base)))}")
    for key, path in written.items():
        say(f"  wrote {path}" + ("  (Docker paths)" if key == "model_config" else
                                 "  (host paths)" if key == "model_config_local" else ""))
    if xla and jax_backend_note:
        say(jax_backend_note)
    config_dir = out_dir if out_dir is not None else base
    local = serve_command(base, port, rest_port, config_dir=config_dir,
                          batching=batching, monitoring=monitoring, xla=xla)
    docker = docker_command(base, port, rest_port, model_name=name, config_dir=config_dir,
                            batching=batching, monitoring=monitoring, xla=xla)
    binary = shutil.which(SERVER_BINARY)
    endpoints = (f"REST: http://localhost:{rest_port}/v1/models/{name}   "
                 f"gRPC: grpc://localhost:{port}/{name}")
    if monitoring:
        endpoints += f"   metrics: http://localhost:{rest_port}{PROMETHEUS_PATH}"
    if batching:
        endpoints += (f"\nat most {max_batch_size} texts per request (batching.config max_batch_size; "
                      "`keras-mtl predict URL` splits larger inputs)")
    if binary and not dry_run:
        local[0] = binary
        say("starting: " + shlex.join(local))
        say(endpoints)
        return _run_forwarding_signals(local)
    if dry_run:
        say("dry run: no server started. To serve with Docker, run:")
    else:
        say(f"{SERVER_BINARY} is not on PATH (TF Serving has no pip package); "
            "to serve with Docker, run:")
    say("  " + shlex.join(docker))
    if binary:
        say("or with the local binary:")
        say("  " + shlex.join([binary, *local[1:]]))
    say(endpoints)
    return 0
