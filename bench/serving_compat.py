"""Does an older TensorFlow runtime load this export and answer as TF 2.21 does?

    python bench/serving_compat.py EXPORT_DIR --python /tmp/tf212/bin/python [--python ...] [--json]

A manual check (not run by the test suite): it needs throwaway venvs of
older releases, outside the repo, e.g.

    python3.11 -m venv /tmp/tf212 && /tmp/tf212/bin/pip install 'tensorflow-cpu==2.12.*'
    /tmp/tf212/bin/pip install --no-deps 'tensorflow-text==2.12.*'   # TF Text of TF Serving 2.16-2.19
    python3.11 -m venv /tmp/tf216 && /tmp/tf216/bin/pip install 'tensorflow-cpu==2.16.*'   # core ops only

EXPORT_DIR is a version dir (or a model base: its newest version). For each
`--python`, and for this Python as the reference, a child process (the
interpreter of that venv running this file with `--child`):

1. loads TF Text's op libraries when tensorflow_text is installed (the `.so`
   files only, as TF Serving links them; keras and keras_mtl are not needed);
2. compares the graph's op types (read from saved_model.pb with TF's protos)
   with the runtime's op registry (`bench/serving_ops.py`) and names every op
   it lacks (a runtime without tensorflow_text, e.g. plain TF 2.16, gets
   only this registry check: it passes when the only ops missing are the TF
   Text ops the reference runtime found in the graph);
3. loads the SavedModel twice and calls every signature whose inputs are all
   strings (`serving_default`, per-task ones; `text_pair` inputs get the
   second texts) on a few texts:
   - `session`: `tf.compat.v1.saved_model.load` into a graph + Session, then
     `Session.run` on the SignatureDef's tensor names: what TF Serving's
     SavedModelBundle does;
   - `tf2`: `tf.saved_model.load(...).signatures[...]`.

The parent prints each runtime's answers and whether they equal the
reference's (strings and integers exactly, floats within --atol, default
1e-5). Exit status: 0 when every runtime loaded the export and agreed, 1
otherwise (the first lines of each error are printed).
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

TEXTS = [
    "the brilliant chef cooked a soup near the old kitchen .",
    "a terrible storm fell suddenly .",
    "Café CRÈME , naïve résumé !",  # case folding and accents
    "",  # an empty text
    " ".join(["the old chef cooked a soup ."] * 6),  # longer than a tiny model's max_sequence_length
]
PAIR_TEXTS = [
    "the chef cooked .",
    "the storm was terrible .",
    "a soup",
    "an empty first text",
    "short",
]


# ---------------------------------------------------------------------------
# the child: runs under the interpreter being checked


def _graph_ops(version_dir):
    # keras_mtl.serving.ops.graph_ops, repeated: this child runs under the interpreter of an old
    # TensorFlow's venv, which cannot import keras_mtl (its package imports need Keras 3).
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel.FromString((Path(version_dir) / "saved_model.pb").read_bytes())
    ops = set()
    for meta_graph in saved_model.meta_graphs:
        graph = meta_graph.graph_def
        functions = {f.signature.name for f in graph.library.function}
        nodes = [*graph.node, *(n for f in graph.library.function for n in f.node_def)]
        ops.update(n.op for n in nodes if n.op not in functions)
    return ops


def _plain(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _error(err):
    return f"{type(err).__name__}: {str(err).strip()[:1500]}"


def _feeds(inputs, texts, pairs):
    """{input name: list of strings} for a signature whose inputs are all strings, else None."""
    if not inputs or any(dtype != "string" for dtype in inputs.values()):
        return None
    return {name: (pairs if "pair" in name else texts) for name in inputs}


def _run_session(tf, version_dir, texts, pairs):
    answers = {}
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
        meta_graph = tf.compat.v1.saved_model.load(sess, ["serve"], version_dir)
        for name, sig in sorted(meta_graph.signature_def.items()):
            inputs = {k: tf.dtypes.as_dtype(v.dtype).name for k, v in sig.inputs.items()}
            feeds = _feeds(inputs, texts, pairs)
            if feeds is None:
                continue
            try:
                out = sess.run({k: v.name for k, v in sig.outputs.items()},
                               {sig.inputs[k].name: v for k, v in feeds.items()})
                answers[name] = {k: _plain(v.tolist()) for k, v in out.items()}
            except Exception as err:  # noqa: BLE001 - reported
                answers[name] = {"error": _error(err)}
    return answers


def _run_tf2(tf, version_dir, texts, pairs):
    answers = {}
    loaded = tf.saved_model.load(version_dir)
    for name, fn in sorted(loaded.signatures.items()):
        spec = fn.structured_input_signature[1]
        feeds = _feeds({k: v.dtype.name for k, v in spec.items()}, texts, pairs)
        if feeds is None:
            continue
        try:
            out = fn(**{k: tf.constant(v, tf.string) for k, v in feeds.items()})
            answers[name] = {k: _plain(v.numpy().tolist()) for k, v in out.items()}
        except Exception as err:  # noqa: BLE001 - reported
            answers[name] = {"error": _error(err)}
    return answers


def child(version_dir, texts, pairs):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(HERE))
    import serving_ops  # bench/serving_ops.py: the op registry

    import tensorflow as tf

    libraries = serving_ops.text_op_libraries()
    report = {"python": sys.version.split()[0], "tensorflow": tf.__version__,
              "tensorflow_text": serving_ops._version("tensorflow-text"), "text_libraries": len(libraries)}
    core = serving_ops.registered_ops()
    try:
        for lib in libraries:
            tf.load_op_library(lib)
    except Exception as err:  # noqa: BLE001 - reported
        report["text_load_error"] = _error(err)
    registered = serving_ops.registered_ops()
    ops = _graph_ops(version_dir)
    report["graph_ops"] = len(ops)
    report["text_ops_used"] = sorted(ops & (registered - core))
    report["missing_ops"] = sorted(ops - registered)
    # Loaded even with ops missing: the error is the evidence.
    for mode, run in (("session", _run_session), ("tf2", _run_tf2)):
        try:
            report[mode] = run(tf, version_dir, texts, pairs)
        except Exception as err:  # noqa: BLE001 - reported
            report[mode] = {"error": _error(err)}
    print("RESULT " + json.dumps(report))


# ---------------------------------------------------------------------------
# the parent


def _version_dir(path):
    path = Path(path).resolve()
    if (path / "saved_model.pb").is_file():
        return path
    versions = sorted(int(p.name) for p in path.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file())
    if not versions:
        sys.exit(f"serving_compat.py: {path}: neither a SavedModel nor a model base holding versions")
    return path / str(versions[-1])


def run_child(python, version_dir, texts, pairs):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    request = json.dumps({"texts": texts, "pairs": pairs})
    proc = subprocess.run([python, str(Path(__file__).resolve()), "--child", str(version_dir)], input=request,
                          capture_output=True, text=True, env=env, cwd="/", timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"python": python, "crashed": f"exit {proc.returncode}: {proc.stderr.strip()[-3000:]}"}
    return json.loads(lines[-1][len("RESULT "):])


def _compare(a, b, atol, path=""):
    """Differences between two answers (nested lists of str/int/float/bool): a list of strings."""
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        diffs = []
        for i, (x, y) in enumerate(zip(a, b)):
            diffs += _compare(x, y, atol, f"{path}[{i}]")
        return diffs
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= atol:
            return []
        return [f"{path}: {a!r} != {b!r}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _max_float_diff(a, b):
    if isinstance(a, list) and isinstance(b, list):
        return max((_max_float_diff(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b)
    return 0.0


def compare_answers(reference, other, atol):
    """{mode: {signature: {"equal": bool, "max_float_diff": float, "diffs": [...]}}}."""
    result = {}
    for mode in ("session", "tf2"):
        ref, got = reference.get(mode), other.get(mode)
        if not isinstance(ref, dict) or not isinstance(got, dict):
            continue
        result[mode] = {}
        for sig, ref_out in ref.items():
            got_out = got.get(sig)
            if got_out is None or "error" in got_out or "error" in ref_out:
                result[mode][sig] = {"equal": False, "diffs": [str((got_out or {}).get("error", "missing"))]}
                continue
            diffs = [f"{sig}: outputs {sorted(ref_out)} != {sorted(got_out)}"] if set(ref_out) != set(got_out) else []
            for key in sorted(set(ref_out) & set(got_out)):
                diffs += _compare(ref_out[key], got_out[key], atol, key)
            result[mode][sig] = {
                "equal": not diffs,
                "max_float_diff": max((_max_float_diff(ref_out[k], got_out[k]) for k in ref_out if k in got_out),
                                      default=0.0),
                "diffs": diffs[:10],
            }
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", help="a version dir, or a model base (its newest version)")
    parser.add_argument("--python", action="append", default=[], help="an older runtime's python (repeatable)")
    parser.add_argument("--text", action="append", help="a text to send (repeatable; default: built-in ones)")
    parser.add_argument("--atol", type=float, default=1e-5)
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        request = json.load(sys.stdin)
        child(args.export, request["texts"], request["pairs"])
        return 0
    texts = args.text or TEXTS
    pairs = (PAIR_TEXTS * len(texts))[: len(texts)]
    version_dir = _version_dir(args.export)
    reference = run_child(sys.executable, version_dir, texts, pairs)
    runs = [reference] + [run_child(p, version_dir, texts, pairs) for p in args.python]
    ok = True
    report = {"export": str(version_dir), "texts": texts, "runtimes": []}
    for python, run in zip([sys.executable, *args.python], runs):
        entry = {"python": python, "reference": run is reference, **run}
        if run is not reference:
            entry["compare"] = compare_answers(reference, run, args.atol)
        report["runtimes"].append(entry)
    reference_text_ops = set(reference.get("text_ops_used", []))
    for entry in report["runtimes"]:
        name = f"{entry['python']}: TF {entry.get('tensorflow')}, TF Text {entry.get('tensorflow_text')}"
        print(f"== {name}")
        if "crashed" in entry:
            ok = False
            print(f"   crashed: {entry['crashed']}")
            continue
        if entry.get("text_load_error"):
            ok = False
            print(f"   TF Text op libraries failed to load: {entry['text_load_error']}")
        print(f"   {entry['graph_ops']} op types in the graph; TF Text ops used: {entry['text_ops_used']}")
        if entry["missing_ops"]:
            missing = set(entry["missing_ops"])
            if entry["tensorflow_text"] is None and not entry["reference"] and missing <= reference_text_ops:
                print(f"   registry check only (no tensorflow_text here): every core op is registered; "
                      f"missing are only the TF Text ops {sorted(missing)}")
                continue
            ok = False
            print(f"   NOT REGISTERED here: {entry['missing_ops']}")
        shown = False
        for mode in ("session", "tf2"):
            answers = entry.get(mode, {})
            if "error" in answers:
                ok = False
                print(f"   {mode} load FAILED: {answers['error']}")
                continue
            for sig, out in answers.items():
                if "error" in out:
                    ok = False
                    print(f"   {mode} {sig} FAILED: {out['error']}")
                    continue
                if not shown and sig == "serving_default":
                    shown = True
                    print(f"   {mode} {sig} answered:")
                    for line in _summary(out, texts):
                        print(f"      {line}")
                verdict = entry.get("compare", {}).get(mode, {}).get(sig)
                if verdict is None:
                    print(f"   {mode} {sig}: answered ({len(out)} outputs)")
                    continue
                ok = ok and verdict["equal"]
                print(f"   {mode} {sig}: same as the reference (atol {args.atol}): {verdict['equal']}, "
                      f"max float difference {verdict.get('max_float_diff', float('nan')):.3g}"
                      + "".join(f"\n      {d}" for d in verdict["diffs"]))
    if args.json:
        print(json.dumps(report, indent=1, ensure_ascii=False))
    print("serving_compat.py: " + ("every runtime loaded the export and answered the same"
                                    if ok else "NOT every runtime loaded the export and answered the same"))
    return 0 if ok else 1


def _summary(out, texts):
    """One line per text: labels, tags (trailing "" dropped), probabilities, num_words, truncated."""
    lines = []
    for i, text in enumerate(texts):
        parts = []
        for key, value in sorted(out.items()):
            row = value[i]
            if key.endswith("_label") or key.endswith("_value") or key in ("num_words", "truncated"):
                parts.append(f"{key}={round(row, 4) if isinstance(row, float) else row}")
            elif key.endswith("_probabilities"):
                parts.append(f"{key}={[round(p, 4) for p in row]}")
            elif key.endswith("_tags") or key.endswith("_labels"):
                shown = list(row)
                while shown and shown[-1] == "":  # padding, and words past max_sequence_length
                    shown.pop()
                parts.append(f"{key}={shown}")
        short = text if len(text) <= 40 else text[:37] + "..."
        lines.append(f"{short!r}: " + ", ".join(parts))
    return lines


if __name__ == "__main__":
    sys.exit(main())
