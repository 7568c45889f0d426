"""Progress lines of slow data steps: on stderr, only for slow steps."""

import io
import time

import pytest

from keras_mtl.data import progress


class Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def default_switch():
    progress.set_enabled(None)
    yield
    progress.set_enabled(None)


def test_a_quick_step_prints_nothing():
    out = io.StringIO()
    with progress.step("reading a.tsv", stream=out, delay=5):
        pass
    assert out.getvalue() == ""


def test_a_slow_step_is_announced_and_closed_in_a_log():
    out = io.StringIO()
    with progress.step("reading big.tsv", stream=out, delay=0.01):
        time.sleep(0.2)
    lines = out.getvalue().split("\n")
    assert lines[0] == "reading big.tsv ..."
    assert lines[1].startswith("reading big.tsv: done in ")
    assert lines[2:] == [""]


def test_on_a_terminal_one_line_is_redrawn_with_counts():
    out = Tty()
    with progress.step("encoding texts", total=10, stream=out, delay=0.01, interval=0.01) as advance:
        for _ in range(10):
            advance()
            time.sleep(0.02)
    text = out.getvalue()
    assert text.startswith("\rencoding texts ...")
    assert "/10 " in text
    assert text.count("\n") == 1 and text.endswith("\n")
    assert "\rencoding texts: done in " in text


def test_a_failing_step_says_it_stopped():
    out = io.StringIO()
    with pytest.raises(ValueError):
        with progress.step("computing", stream=out, delay=0.01):
            time.sleep(0.1)
            raise ValueError("boom")
    assert "computing: stopped in " in out.getvalue()


def test_switched_off_by_flag_and_environment(monkeypatch):
    out = io.StringIO()
    progress.set_enabled(False)
    with progress.step("slow", stream=out, delay=0.0) as advance:
        advance(3)
        time.sleep(0.05)
    progress.set_enabled(None)
    monkeypatch.setenv("KERAS_MTL_PROGRESS", "0")
    assert not progress.enabled()
    with progress.step("slow", stream=out, delay=0.0):
        time.sleep(0.05)
    assert out.getvalue() == ""


def test_display_path_is_relative_below_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert progress.display_path(tmp_path / "data" / "a.tsv") == "data/a.tsv"
    assert progress.display_path("/elsewhere/a.tsv") == "/elsewhere/a.tsv"
