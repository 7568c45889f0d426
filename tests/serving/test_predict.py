"""keras_mtl.serving.predict: local predictions from an export; bad inputs are one-line errors.

Its answers on a real export are checked against the served outputs in
tests/test_end_to_end.py (test_predict_equals_the_served_outputs) and after
concurrent exports in tests/test_export_concurrent.py.
"""

import pytest

from keras_mtl.errors import ModelError, ServingError


def test_predict_bad_model_dirs_are_one_line_errors(tmp_path):
    from keras_mtl.serving.predict import predict

    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "corrupt" / "1").mkdir(parents=True)
    (tmp_path / "corrupt" / "1" / "saved_model.pb").write_bytes(b"\x00garbage\n\nmore")
    cases = {
        "missing": "missing: not found",
        "empty": "empty: not a SavedModel",
        "afile": "afile: is a file, not a model directory",
        "corrupt": "1: cannot load the SavedModel",
    }
    for name, expected in cases.items():
        with pytest.raises(ModelError) as info:
            predict(tmp_path / name, ["a text"])
        assert expected in str(info.value) and "\n" not in str(info.value), str(info.value)
    for bad in (0, -3, 1.5):
        with pytest.raises(ServingError, match="batch_size must be an integer >= 1"):
            predict(tmp_path / "empty", ["a"], batch_size=bad)


def test_predict_is_the_package_level_predict():
    import keras_mtl
    from keras_mtl.serving.predict import predict

    assert keras_mtl.predict is predict
