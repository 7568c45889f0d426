"""The ops of an exported graph against what TF Serving 2.16+ registers.

TF Serving 2.16 to 2.19 link TF Text 2.12, which lacks `RoundRobinTrim`
(TF Serving issue #2267), so an export may use only the TF Text ops that
README.md promises ("Which TF Serving versions load the export"; the same
set is `keras_mtl.serving.ops.TF_TEXT_OPS`), all of which TF Text 2.12
registers, and otherwise TF 2.16's core ops. The op lists in data/ were
written by bench/serving_ops.py in venvs of those releases (each file's
first line is the command and the versions). A real load of an export by
TF 2.12 + TF Text 2.12 is bench/serving_compat.py (manual: it needs those
venvs).
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from keras_mtl.serving.ops import TF_TEXT_OPS, TF_TEXT_PREFIX, check_ops, graph_ops, read_op_list

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
README = REPO / "README.md"
SECTION = "## Which TF Serving versions load the export"
PROMISE = re.compile(r"^\*\*TF Text ops of the export:\*\*(.*)$", re.M)

CORE_2_16 = DATA / "ops_tf2.16_core.txt"
TEXT_2_12 = DATA / "ops_tf_text2.12.txt"
TEXT_2_21 = DATA / "ops_tf_text2.21.txt"  # what the TF Text of the build venv registers


def readme_promise():
    """The TF Text op names listed on README's `**TF Text ops of the export:**` line, in its section."""
    text = README.read_text(encoding="utf-8")
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1]
    section = re.split(r"^## ", section, maxsplit=1, flags=re.M)[0]
    found = PROMISE.findall(section)
    assert len(found) == 1, f"the section {SECTION!r} must hold one '**TF Text ops of the export:**' line"
    names = re.findall(r"`([^`]+)`", found[0])
    assert names and len(names) == len(set(names)), found[0]
    return set(names)


def all_tf_text_ops():
    return read_op_list(TEXT_2_12) | read_op_list(TEXT_2_21)


def tf_text_ops_in(ops):
    """The graph's TF Text ops: those any TF Text release we listed registers, or `TFText>` ones."""
    return {op for op in ops if op in all_tf_text_ops() or op.startswith(TF_TEXT_PREFIX)}


# ---------------------------------------------------------------------------
# the promise and the evidence files


def test_readme_states_exactly_the_promised_tf_text_ops():
    assert readme_promise() == set(TF_TEXT_OPS)


@pytest.mark.parametrize("path", [CORE_2_16, TEXT_2_12, TEXT_2_21], ids=lambda p: p.name)
def test_op_lists_are_serving_ops_output(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# ") and "bench/serving_ops.py" in lines[0], "first line: the command"
    version = re.search(r"(\d+\.\d+)", path.name).group(1)
    package = "tensorflow-text" if "text" in path.name else "tf.__version__"
    assert re.search(rf"{re.escape(package)}=={re.escape(version)}\.\d+", lines[0]), lines[0]
    names = lines[1:]
    assert names == sorted(set(names)) and all(re.fullmatch(r"[A-Za-z0-9_>]+", n) for n in names)


def test_the_lists_show_the_issue():
    core, text_2_12, text_2_21 = read_op_list(CORE_2_16), read_op_list(TEXT_2_12), read_op_list(TEXT_2_21)
    assert len(core) > 1500 and {"Const", "MatMul", "StatefulPartitionedCall", "StringSplitV2"} <= core
    assert not (core & (text_2_12 | text_2_21)), "TF Text ops are not core ops"
    assert set(TF_TEXT_OPS) <= text_2_12, "TF Text 2.12 registers every promised op"
    assert "TFText>RoundRobinTrim" in text_2_21, "the op of TF Serving issue #2267, in today's TF Text"
    assert not {op for op in text_2_12 if "RoundRobin" in op}, "and not in TF Text 2.12"


# ---------------------------------------------------------------------------
# graph_ops and check_ops on a hand-written SavedModel


def _write_saved_model(path, graph_ops_, function_ops):
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    graph = saved_model.meta_graphs.add().graph_def
    for i, op in enumerate(graph_ops_):
        graph.node.add(name=f"n{i}", op=op)
    fn = graph.library.function.add()
    fn.signature.name = "__inference_encode_7"
    for i, op in enumerate(function_ops):
        fn.node_def.add(name=f"f{i}", op=op)
    graph.node.add(name="call", op="__inference_encode_7")  # a direct call: not an op
    path.mkdir(parents=True, exist_ok=True)
    (path / "saved_model.pb").write_bytes(saved_model.SerializeToString())
    return path


def test_graph_ops_reads_the_graph_and_every_function(tmp_path):
    version = _write_saved_model(tmp_path / "m" / "3", ["Placeholder", "StatefulPartitionedCall"],
                                 ["CaseFoldUTF8", "MatMul"])
    expected = {"Placeholder", "StatefulPartitionedCall", "CaseFoldUTF8", "MatMul"}
    assert graph_ops(version) == expected
    assert graph_ops(tmp_path / "m") == expected, "a model base reads its newest version"
    assert check_ops(version) == []


def test_check_ops_names_each_broken_promise(tmp_path):
    version = _write_saved_model(
        tmp_path / "1", ["Placeholder", "TFText>RoundRobinTrim", "SomeNewCoreOp"],
        ["NormalizeUTF8", "TFText>Utf8Binarize", "FastWordpieceTokenizeWithOffsets"],
    )
    assert check_ops(version, tf_text_ops=all_tf_text_ops()) == [
        "NormalizeUTF8: a TF Text op outside the promised set "
        "CaseFoldUTF8, FastWordpieceTokenizeWithOffsets, RegexSplitWithOffsets",
        "TFText>RoundRobinTrim: not in TF Text 2.12 (TF Serving 2.16-2.19 cannot load it)",
        "TFText>Utf8Binarize: a TF Text op outside the promised set "
        "CaseFoldUTF8, FastWordpieceTokenizeWithOffsets, RegexSplitWithOffsets",
    ]
    runtime = read_op_list(CORE_2_16) | read_op_list(TEXT_2_12)
    problems = check_ops(version, runtime_ops=runtime, tf_text_ops=all_tf_text_ops())
    assert problems[-1] == "SomeNewCoreOp: not registered by the target runtime" and len(problems) == 4


# ---------------------------------------------------------------------------
# real exports: the tiny run and the tiny sentence-pair run


@pytest.fixture(scope="module", params=["tiny_run", "tiny_pair_run"])
def exported(request, tmp_path_factory):
    from keras_mtl.serving.export import export

    try:
        run = request.getfixturevalue(request.param)
    except pytest.FixtureLookupError:
        pytest.skip(f"tests/conftest.py has no `{request.param}` fixture yet (the sentence-pair run)")
    version_dir = export(run["workdir"], out=str(tmp_path_factory.mktemp("op-set") / request.param), warmup=False)
    return {"run": request.param, "dir": Path(version_dir), "ops": graph_ops(version_dir)}


@pytest.mark.slow
def test_export_uses_exactly_the_promised_tf_text_ops(exported):
    assert tf_text_ops_in(exported["ops"]) == readme_promise() == set(TF_TEXT_OPS)


@pytest.mark.slow
def test_every_tf_text_op_is_in_tf_text_2_12(exported):
    assert tf_text_ops_in(exported["ops"]) - read_op_list(TEXT_2_12) == set()


@pytest.mark.slow
def test_every_other_op_is_a_tf_2_16_core_op(exported):
    others = exported["ops"] - tf_text_ops_in(exported["ops"])
    assert len(others) > 20, sorted(others)
    assert others - read_op_list(CORE_2_16) == set()


@pytest.mark.slow
def test_no_round_robin_trim_and_no_unpromised_tf_text_op(exported):
    ops = exported["ops"]
    assert not {op for op in ops if "RoundRobin" in op}
    assert not {op for op in ops if op.startswith(TF_TEXT_PREFIX)}
    assert tf_text_ops_in(ops) <= set(TF_TEXT_OPS)
    runtime = read_op_list(CORE_2_16) | read_op_list(TEXT_2_12)
    assert check_ops(exported["dir"], runtime_ops=runtime, tf_text_ops=all_tf_text_ops()) == []


@pytest.mark.slow
def test_the_pair_export_has_a_pair_signature(exported):
    """The pair run's graph holds the sentence-pair encoding whose ops the tests above checked."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel.FromString((exported["dir"] / "saved_model.pb").read_bytes())
    inputs = {name: set(sig.inputs) for name, sig in saved_model.meta_graphs[0].signature_def.items()}
    pair_signatures = sorted(name for name, keys in inputs.items() if "text_pair" in keys)
    if exported["run"] == "tiny_pair_run":
        assert pair_signatures, inputs
    else:
        assert pair_signatures == [], inputs


# ---------------------------------------------------------------------------
# the tooling scripts run with this Python (the older runtimes are manual)


def _run_bench(script, *args, env):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), *map(str, args)],
                          capture_output=True, text=True, env=env, cwd="/", timeout=600)
    return proc


def test_serving_ops_lists_this_runtime(subprocess_env):
    import tensorflow as tf

    core = _run_bench("serving_ops.py", "core", env=subprocess_env(backend=None, repo_on_path=False))
    text = _run_bench("serving_ops.py", "text", env=subprocess_env(backend=None, repo_on_path=False))
    assert core.returncode == 0 and text.returncode == 0, core.stderr[-2000:] + text.stderr[-2000:]
    for out in (core, text):
        assert out.stdout.startswith("# ") and f"tf.__version__=={tf.__version__}" in out.stdout.splitlines()[0]
    core_ops, text_ops = set(core.stdout.splitlines()[1:]), set(text.stdout.splitlines()[1:])
    assert {"Const", "StringSplitV2", "RaggedTensorToTensor"} <= core_ops
    assert set(TF_TEXT_OPS) <= text_ops and not core_ops & text_ops


@pytest.mark.slow
def test_serving_compat_answers_with_this_runtime(exported, subprocess_env):
    proc = _run_bench("serving_compat.py", exported["dir"], "--json", env=subprocess_env(backend=None))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "every runtime loaded the export and answered the same" in proc.stdout
    assert "TF Text ops used: ['CaseFoldUTF8', 'FastWordpieceTokenizeWithOffsets', 'RegexSplitWithOffsets']" \
        in proc.stdout
    for mode in ("session", "tf2"):
        assert f"   {mode} serving_default: answered" in proc.stdout
