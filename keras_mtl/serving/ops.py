"""The ops an export's graph uses, and the TF Text ops it is promised to use.

TF Serving 2.16 to 2.19 link TensorFlow Text 2.12, which lacks ops that
newer TF Text releases added (`TFText>RoundRobinTrim`, the op behind
keras-hub's `MultiSegmentPacker`: TF Serving issue #2267). So the export's
tokenizer keeps to the TF Text ops in `TF_TEXT_OPS`, which TF Text 2.12
registers; README.md ("Which TF Serving versions load the export") states the
same set, and tests/serving/test_op_set.py checks an export against both and
against the op lists of TF 2.16 and TF Text 2.12 (made by
bench/serving_ops.py).

`graph_ops(dir)` reads `saved_model.pb` with TensorFlow's protos only: it
loads nothing, so it also works on an export that this TensorFlow could not
load. `check_ops(dir)` lists what breaks that promise.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

# The TF Text ops an export may use: keras-hub's WordPieceTokenizer splits
# words (RegexSplitWithOffsets), lowercases (CaseFoldUTF8, unless
# `model.lowercase: false`) and cuts words into pieces
# (FastWordpieceTokenizeWithOffsets). All three are in TF Text 2.12.
TF_TEXT_OPS = frozenset({"CaseFoldUTF8", "FastWordpieceTokenizeWithOffsets", "RegexSplitWithOffsets"})

# Ops registered with this prefix come from TF Text's newer op-kernel shim;
# many are missing from older releases (TF Text 2.12 has no RoundRobinTrim).
TF_TEXT_PREFIX = "TFText>"


def _saved_model_pb(saved_model_dir: str | os.PathLike) -> Path:
    from keras_mtl.errors import ModelError
    from keras_mtl.serving.layout import SAVED_MODEL, resolve_version_dir

    path = resolve_version_dir(saved_model_dir)  # a version, or a model base's newest (else a one-line ModelError)
    pb = path / SAVED_MODEL
    if not pb.is_file():
        raise ModelError(f"{path}: no {SAVED_MODEL}")
    return pb


def graph_ops(saved_model_dir: str | os.PathLike) -> set[str]:
    """Every op type in a SavedModel: its graphs and every function of their libraries.

    `saved_model_dir` is a version dir, or a model base (its newest version).
    A node whose op type is the name of a library function (a direct call)
    is not an op and is left out; the functions it calls are read anyway.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel.FromString(_saved_model_pb(saved_model_dir).read_bytes())
    ops: set[str] = set()
    for meta_graph in saved_model.meta_graphs:
        graph = meta_graph.graph_def
        functions = {f.signature.name for f in graph.library.function}
        nodes = [*graph.node, *(node for f in graph.library.function for node in f.node_def)]
        ops.update(node.op for node in nodes if node.op not in functions)
    return ops


def is_tf_text_op(op: str, tf_text_ops: Iterable[str] = ()) -> bool:
    """Whether `op` is a TF Text op: in `tf_text_ops` (a TF Text release's list), promised, or prefixed."""
    return op in TF_TEXT_OPS or op.startswith(TF_TEXT_PREFIX) or op in set(tf_text_ops)


def check_ops(
    saved_model_dir: str | os.PathLike,
    runtime_ops: Iterable[str] | None = None,
    tf_text_ops: Iterable[str] = (),
) -> list[str]:
    """What in an export's graph breaks the op promise; [] when nothing does.

    A problem is a TF Text op outside `TF_TEXT_OPS` (any `TFText>` op, any
    `RoundRobin*` op, or any op in `tf_text_ops`, the op list of a TF Text
    release), and, when `runtime_ops` (every op a target runtime registers,
    e.g. TF 2.16's core ops plus TF Text 2.12's) is given, any op it lacks.
    One problem a line, naming the op.
    """
    ops = graph_ops(saved_model_dir)
    tf_text_ops = set(tf_text_ops)
    problems = []
    for op in sorted(ops):
        if op in TF_TEXT_OPS:
            continue
        if "RoundRobin" in op:
            problems.append(f"{op}: not in TF Text 2.12 (TF Serving 2.16-2.19 cannot load it)")
        elif is_tf_text_op(op, tf_text_ops):
            problems.append(f"{op}: a TF Text op outside the promised set {', '.join(sorted(TF_TEXT_OPS))}")
    if runtime_ops is not None:
        runtime_ops = set(runtime_ops)
        reported = {p.split(":", 1)[0] for p in problems}
        problems += [f"{op}: not registered by the target runtime"
                     for op in sorted(ops - runtime_ops) if op not in reported]
    return problems


def read_op_list(path: str | os.PathLike) -> set[str]:
    """An op list written by bench/serving_ops.py: one name a line, `#` lines are comments."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return {line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")}
