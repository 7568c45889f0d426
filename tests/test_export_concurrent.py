"""Export: bad --out / --keep are one-line errors before anything is written,
and concurrent exports to one model base get distinct versions.

Two real `export` processes run at once on one trained work dir (the
session's tiny run, conftest.py). A file barrier makes them overlap where it
matters: both have picked their temporary directory (the old code picked the
version there, so both took 1 and the second rename died with "Directory not
empty") before either writes, and both reach the publishing step together. Both must succeed, with
versions 1 and 2, complete and loadable.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from keras_mtl.errors import KerasMTLError, ModelError


# ---------------------------------------------------------------------------
# argument errors: no work dir, no training needed


@pytest.mark.parametrize("keep", [0, -1, 1.5, "2", True])
def test_bad_keep_is_refused_before_anything(tmp_path, keep):
    from keras_mtl.serving.export import export

    out = tmp_path / "saved"
    with pytest.raises(ModelError, match=r"keep \(--keep\) must be an integer >= 1") as info:
        export(tmp_path / "no-such-workdir", out=out, keep=keep)
    assert "\n" not in str(info.value)
    assert not out.exists()


def test_out_naming_a_file_is_one_line_error(tmp_path):
    from keras_mtl.serving.export import export

    afile = tmp_path / "model.txt"
    afile.write_text("not a directory")
    with pytest.raises(ModelError, match=r"model.txt: the output dir is an existing file") as info:
        export(tmp_path / "no-such-workdir", out=afile)
    assert "\n" not in str(info.value)
    with pytest.raises(ModelError, match=r"model.txt \(a parent of the output dir\) is an existing file"):
        export(tmp_path / "no-such-workdir", out=afile / "sub" / "dir")
    assert afile.read_text() == "not a directory"


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--keep", "0"], "keep (--keep) must be an integer >= 1"),
        (["--keep", "-1"], "keep (--keep) must be an integer >= 1"),
        (["--out", "{file}"], "is an existing file, not a directory"),
    ],
)
def test_cli_export_errors_are_one_line(tmp_path, capsys, argv, expected):
    from keras_mtl.cli import main

    afile = tmp_path / "afile"
    afile.write_text("x")
    argv = [a.replace("{file}", str(afile)) for a in argv]
    rc = main(["export", str(tmp_path / "missing-workdir"), *argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and "error:" in lines[0] and expected in lines[0], err


# ---------------------------------------------------------------------------
# real exports


# One export. `barrier(name)` waits until both processes have reached it:
# "start" when the temporary dir is chosen (before the SavedModel is written),
# "publish" right before the lock is taken to pick the version and rename.
EXPORT_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    import keras_mtl.serving.export as ex
    import keras_mtl.serving.layout as layout

    workdir, base, sync = sys.argv[1], sys.argv[2], Path(sys.argv[3])

    def barrier(name):
        (sync / f"{name}-{os.getpid()}").touch()
        deadline = time.time() + 600
        while len(list(sync.glob(f"{name}-*"))) < 2:
            if time.time() > deadline:
                sys.exit(f"barrier {name}: the other export never arrived")
            time.sleep(0.01)

    real_build, real_lock = ex.build_archive, layout.base_lock

    def build_archive(*args, **kwargs):
        barrier("start")
        return real_build(*args, **kwargs)

    def base_lock(path):
        barrier("publish")
        return real_lock(path)

    ex.build_archive, layout.base_lock = build_archive, base_lock
    print("RESULT " + json.dumps(str(ex.export(workdir, out=base, warmup=False, keep=5))))
    """
)


@pytest.mark.slow
def test_two_concurrent_exports_get_distinct_versions(tiny_run, subprocess_env, result_of, tmp_path):
    from keras_mtl.serving.export import export
    from keras_mtl.serving.layout import version_dirs

    workdir = tiny_run["workdir"]  # the session's tiny run (conftest.py)
    base, sync = tmp_path / "saved", tmp_path / "sync"
    sync.mkdir()
    procs = [
        subprocess.Popen([sys.executable, "-c", EXPORT_SCRIPT, str(workdir), str(base), str(sync)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(), cwd=tmp_path)
        for _ in range(2)
    ]
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=900)
        finally:
            if proc.poll() is None:
                proc.kill()
        results.append(result_of(subprocess.CompletedProcess(proc.args, proc.returncode, out, err)))
    assert sorted(Path(r).name for r in results) == ["1", "2"]
    assert version_dirs(base) == [1, 2]
    for v in (1, 2):
        assert (base / str(v) / "saved_model.pb").is_file()
        assert json.loads((base / str(v) / "assets.extra" / "keras_mtl.json").read_text())["name"] == tiny_run["config"]["name"]
    # only the versions: no temporary directory or lock file left behind
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]

    # --keep -1 fails before writing anything; --keep 1 then prunes under the lock
    with pytest.raises(KerasMTLError, match="keep"):
        export(workdir, out=base, keep=-1, warmup=False)
    assert version_dirs(base) == [1, 2]
    assert export(workdir, out=base, keep=1, warmup=False) == base / "3"
    assert version_dirs(base) == [3]

    # the export answers through keras_mtl.serving.predict (input `text` checked), in order
    from keras_mtl.serving.predict import predict

    texts = [f"the chef cooked soup number {i}" + " ." * (i % 4) for i in range(70)]
    preds = predict(base, texts, batch_size=32)
    assert [p["_meta"]["num_words"] for p in preds] == [len(t.split()) for t in texts]
    assert predict(base, texts[:5]) == preds[:5]
    meta = base / "3" / "assets.extra" / "keras_mtl.json"
    meta.write_text("{not json")
    with pytest.raises(ModelError, match="keras_mtl.json: cannot read the export metadata") as info:
        predict(base, texts[:1])
    assert "\n" not in str(info.value)
