"""The code examples of the docs run as written (the fenced block is read from the page)."""

import re
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _python_block(page, heading):
    """The first ```python block of the section `heading` of docs/`page`."""
    text = (DOCS / page).read_text(encoding="utf-8")
    section = text[text.index(f"\n{heading}\n"):]
    section = section[: m.start()] if (m := re.search(r"\n## ", section[1:])) else section
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"{page}: no python block under {heading!r}"
    return match.group(1)


def test_assemble_a_multi_task_model_yourself(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the example saves multitask.keras in the working directory
    code = _python_block("layers.md", "## Assemble a multi-task model yourself")
    namespace = {"__name__": "docs_example"}
    exec(compile(code, "docs/layers.md (Assemble a multi-task model yourself)", "exec"), namespace)
    history, model, reloaded, x = namespace["history"], namespace["model"], namespace["reloaded"], namespace["x"]
    assert set(model.output) == {"topic", "tags"}
    assert len(history.history["loss"]) == 2 and all(np.isfinite(history.history["loss"]))
    want, got = model.predict(x, verbose=0), reloaded.predict(x, verbose=0)
    assert want["topic"].shape == (64, 3) and want["tags"].shape == (64, 16, 5)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-6)


def test_config_reference_is_the_scripts_output():
    """docs/config.md is what docs/make_config_reference.py prints from the config and reader models."""
    import runpy

    script = runpy.run_path(str(DOCS / "make_config_reference.py"), run_name="config_reference")
    want = script["render"]()
    got = (DOCS / "config.md").read_text(encoding="utf-8")
    assert got == want, "docs/config.md is stale: run `python docs/make_config_reference.py > docs/config.md`"
