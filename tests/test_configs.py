"""The shipped configs load; the CoNLL-U and shared-sentence configs read their data."""

from pathlib import Path

import pytest

from keras_mtl.config import load_config
from keras_mtl.data.load import load_task_data

# Located from this file, not the working directory: run from anywhere, these
# tests find the configs or fail; only the real-data test skips (../shared
# beside the repo absent), as the configs' own ../../shared paths resolve.
REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
SHARED = REPO.parent / "shared" / "data"


def test_the_shipped_configs_are_found():
    names = {p.name for p in CONFIGS}
    assert {"demo.yaml", "ud_treebank.yaml", "polarity_subjectivity.yaml"} <= names, sorted(names)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    loaded = load_config(path)
    assert loaded.config.tasks


def test_ud_treebank_config_reads_the_conllu_fixture():
    data = load_task_data(load_config(REPO / "configs" / "ud_treebank.yaml").config)
    train = data.splits["train"]
    # Both tasks read the same file: one merged example per sentence, two labels.
    assert len(train) == len(data.per_task["upos"]["train"]) >= 2
    assert all(set(ex.labels) == {"upos", "deprel"} for ex in train)
    assert "nmod" in data.classes["deprel"] and "nmod:poss" not in data.classes["deprel"]
    assert "PROPN" in data.classes["upos"]


@pytest.mark.real_data
def test_polarity_subjectivity_shared_sentences_share_splits():
    if not SHARED.is_dir():
        pytest.skip("../shared/data not found: real-data tests need the shared data beside the repo")
    data = load_task_data(load_config(REPO / "configs" / "polarity_subjectivity.yaml").config)
    assert data.overlap["shared"]["polarity|subjectivity"] == 4175
    assert data.overlap["leaks"] == []
    # Merged examples carrying both labels exist in every split.
    for split in ("train", "dev", "test"):
        assert any(len(ex.labels) == 2 for ex in data.splits[split])
