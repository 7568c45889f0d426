"""`keras-mtl serve` on an export it cannot write into (a read-only mount, a full
disk): one error line naming an option that exists, `--config-dir DIR`, which
writes models.config, batching.config and monitoring.config elsewhere (the
Docker command then mounts that dir too).

The export is a stand-in (`1/saved_model.pb`, `assets.extra/keras_mtl.json`):
`serve` reads nothing else. A read-only filesystem is simulated (the tests
run as root, which file modes do not stop): writing a file under the base
raises EROFS.
"""

import contextlib
import errno
import io
import json
import pathlib

import pytest

from keras_mtl.cli import main


@pytest.fixture
def base(tmp_path):
    base = tmp_path / "saved" / "demo"
    (base / "1" / "assets.extra").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_bytes(b"")
    (base / "1" / "assets.extra" / "keras_mtl.json").write_text(
        json.dumps({"name": "demo", "backend": "tensorflow", "tensorflow_version": "2.16.1"}), encoding="utf-8"
    )
    return base


@pytest.fixture
def read_only(monkeypatch):
    """read_only(dir): writing a file below `dir` fails as on a read-only mount."""
    real = pathlib.Path.write_text

    def install(root):
        def write_text(self, *args, **kwargs):
            if pathlib.Path(self).resolve().is_relative_to(pathlib.Path(root).resolve()):
                raise OSError(errno.EROFS, "Read-only file system", str(self))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "write_text", write_text)

    return install


def invoke(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_serve_on_a_read_only_export_names_the_config_dir_option(base, read_only, tmp_path):
    read_only(base)
    before = _files(base)
    code, out, err = invoke(["serve", base, "--dry-run"])
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    prefix = f"keras-mtl serve: error: cannot write {base / 'models.config'}: Read-only file system"
    assert lines[0].startswith(prefix), err
    assert "keras-mtl serve --config-dir DIR" in lines[0], err
    assert "(pass out_dir=...)" not in lines[0], err
    assert _files(base) == before  # no half-written config file either

    config_dir = tmp_path / "serving-config"
    code, out, err = invoke(["serve", base, "--dry-run", "--config-dir", config_dir])
    assert code == 0, err
    assert sorted(p.name for p in config_dir.iterdir()) == [
        "batching.config", "models.config", "models.local.config", "monitoring.config",
    ]
    assert f"{config_dir.resolve()}:/keras_mtl_serving" in out, out  # the Docker command mounts the config dir
    assert _files(base) == before


def test_a_config_dir_that_cannot_be_written_says_so(base, read_only, tmp_path):
    read_only(tmp_path / "ro")
    (tmp_path / "ro").mkdir()
    code, _, err = invoke(["serve", base, "--dry-run", "--config-dir", tmp_path / "ro"])
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "Read-only file system; pass another --config-dir" in err, err
