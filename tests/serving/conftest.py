"""Fixtures of the serving tests."""

from pathlib import Path

import pytest

from helpers import import_path

# tests/serving/test_predict.py builds fake exports (its `build_fake_exports`).
TEST_PREDICT = Path(__file__).with_name("test_predict.py")


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    """{kind: model base dir} of the fake exports of test_predict.py, written once per test module."""
    pytest.importorskip("tensorflow")
    return import_path(TEST_PREDICT, "_fake_exports").build_fake_exports(tmp_path_factory.mktemp("fake-exports"))
