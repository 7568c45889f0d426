"""Which ops a TensorFlow runtime registers: the core ops, and those TF Text adds.

    <python> bench/serving_ops.py core  > ops_tf<version>_core.txt
    <python> bench/serving_ops.py text  > ops_tf_text<version>.txt
    <python> bench/serving_ops.py all            # both, one name a line

Run it with the Python of a throwaway venv holding the TensorFlow (and
tensorflow-text) release whose op set you want, e.g. the ones the op lists
in tests/serving/data/ came from (their first line names the command):

    python3.11 -m venv /tmp/tf216 && /tmp/tf216/bin/pip install 'tensorflow-cpu==2.16.*'
    /tmp/tf216/bin/python bench/serving_ops.py core > tests/serving/data/ops_tf2.16_core.txt

    python3.11 -m venv /tmp/tf212 && /tmp/tf212/bin/pip install 'tensorflow-cpu==2.12.*'
    /tmp/tf212/bin/pip install --no-deps 'tensorflow-text==2.12.*'   # its deps name `tensorflow`, not -cpu
    /tmp/tf212/bin/python bench/serving_ops.py text > tests/serving/data/ops_tf_text2.12.txt

TF Serving 2.16-2.19 link the TensorFlow core ops of their own release and
the TF Text 2.12 ops, so an export they load must use ops from
ops_tf2.16_core.txt (the oldest) and ops_tf_text2.12.txt only
(tests/serving/test_op_set.py checks that).

`core`: the op registry right after `import tensorflow`. `text`: the ops
that appear in the registry once TF Text's op libraries are loaded
(`tf.load_op_library` on each `tensorflow_text/python/ops/_*.so`, which is
all TF Serving links; `import tensorflow_text` would also import its Keras
layers). The output is sorted, one name a line, after one `#` line naming
the command, the Python and the package versions. A summary goes to stderr.

The whole registry is read with TF's C API `TF_GetAllOpList` through the
private `tensorflow.python.client.pywrap_tf_session` (this is a tooling
script; keras_mtl itself does not use it). The public `tf.raw_ops` is no
substitute: it lists only ops with Python wrappers (about 450 registered core
ops are missing from it in TF 2.12, e.g. `_Arg`), and loaded op libraries
never appear in it. It is still read, as a cross-check printed to stderr.
"""

import argparse
import glob
import importlib.util
import os
import platform
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def registered_ops():
    """Every op name in this process's op registry (private API, see the module doc)."""
    from tensorflow.core.framework import op_def_pb2
    from tensorflow.python.client import pywrap_tf_session as c_api

    buf = c_api.TF_GetAllOpList()
    try:
        op_list = op_def_pb2.OpList.FromString(c_api.TF_GetBuffer(buf))
    finally:
        c_api.TF_DeleteBuffer(buf)
    return {op.name for op in op_list.op}


def text_op_libraries():
    """The TF Text op libraries (`.so`) of the installed tensorflow_text, or [] when it is absent."""
    spec = importlib.util.find_spec("tensorflow_text")
    if spec is None or not spec.submodule_search_locations:
        return []
    text_dir = spec.submodule_search_locations[0]
    return sorted(glob.glob(os.path.join(text_dir, "python", "ops", "_*.so")))


def _version(dist):
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def collect():
    """{"core", "text", "raw_ops", "versions", "libraries"} for this Python's TensorFlow."""
    import tensorflow as tf

    core = registered_ops()
    raw_ops = {name for name in dir(tf.raw_ops) if not name.startswith("_")}
    libraries = text_op_libraries()
    for lib in libraries:
        tf.load_op_library(lib)
    text = registered_ops() - core if libraries else None
    versions = {"python": platform.python_version(), "tf.__version__": tf.__version__}
    for dist in ("tensorflow-cpu", "tensorflow", "tensorflow-text"):
        if _version(dist):
            versions[dist] = _version(dist)
    return {"core": core, "text": text, "raw_ops": raw_ops, "versions": versions, "libraries": libraries}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["core", "text", "all"], nargs="?", default="all")
    args = parser.parse_args(argv)
    found = collect()
    if args.which != "core" and found["text"] is None:
        parser.exit(2, "serving_ops.py: tensorflow_text is not installed in this Python: no TF Text ops\n")
    names = {"core": found["core"], "text": found["text"], "all": found["core"] | (found["text"] or set())}
    names = names[args.which]
    versions = " ".join(f"{k}=={v}" for k, v in found["versions"].items())
    print(f"# {sys.executable} bench/serving_ops.py {args.which}  ({versions})")
    for name in sorted(names):
        print(name)
    missing = sorted(found["raw_ops"] - found["core"])
    print(
        f"serving_ops.py: {versions}: {len(found['core'])} core ops registered "
        f"({len(found['raw_ops'])} in tf.raw_ops, {len(missing)} of them not registered"
        f"{': ' + ', '.join(missing[:10]) if missing else ''}); "
        + (f"{len(found['text'])} TF Text ops from {len(found['libraries'])} libraries"
           if found["text"] is not None else "no tensorflow_text"),
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
