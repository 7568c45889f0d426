"""Smoke tests of the benchmark scripts (bench/*.py) at tiny sizes.

Each script's `main([... "--tiny", "--results-dir", tmp])` must run, print
its target line and write a JSON result with the machine and load average;
`markdown(result)` must render it; run_all must rewrite only the text between
its markers. Figures at these sizes mean nothing: only the plumbing is tested.
"""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `bench` is a folder of scripts beside the package
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402


def _run(module, tmp_path, *extra):
    status = module.main(["--tiny", "--results-dir", str(tmp_path), *extra])
    assert status == 0
    result = json.loads((tmp_path / f"{module.NAME}.json").read_text())
    assert result["tiny"] is True
    assert result["machine"]["cores"] >= 1 and result["machine"]["cpu"]
    assert len(result["loadavg_start"]) == 3 and len(result["loadavg_end"]) == 3
    text = module.markdown(result)
    assert text.startswith(("|", "`", "T =", "Encoder", "keras-mtl", "Skipped"))
    return result


def test_targets_and_tables():
    class Args:
        quiet = True
        tiny = True
        results_dir = "unused"

    run = common.Run("x", Args())
    assert run.target("a", 3.0, 5.0, False, "%") is True
    assert run.target("b", 0.4, 0.5, True, "x") is False
    assert run.target("c", None, 1.0, True) is None
    table = common.targets_table(run.result)
    assert "**missed**" in table and "| a | 3% | <= 5% | met |" in table


def test_machine(tmp_path, capsys):
    from bench import machine

    result = _run(machine, tmp_path)
    assert all(g > 0 for by in result["gflops"].values() for g in by.values())
    assert "numpy" in result["best_gflops"]
    assert "keras/" + result["backend"] + machine.BF16_SUFFIX in result["best_gflops"]
    assert "GFLOP/s" in capsys.readouterr().out
    assert "bfloat16 (info)" in machine.markdown(result)


def test_op_category():
    from bench.train_efficiency import op_category

    assert op_category("model/encoder_0/x/Tensordot/MatMul", "MatMul") == "matmuls (dense + attention)"
    # oneDNN's rewritten forms (CPUs with AVX-512)
    assert op_category("model/encoder_0/x/MatMul", "_MklBatchMatMulV2") == "matmuls (dense + attention)"
    assert op_category("model/encoder_0/x/MatMul", "_MklFusedMatMul") == "matmuls (dense + attention)"
    assert op_category("model/encoder_0/attention/transpose", "_MklTranspose").startswith("transposes")
    assert op_category("gradient_tape/m/encoder_0/self_attention_layer/softmax/mul", "Mul") == "softmax"
    assert op_category("adam_w/clip_by_norm_2/Select_1", "Select") == "optimizer (AdamW, clipnorm)"
    assert op_category("m/encoder_0/feedforward_layer_norm/mul", "Mul") == "layer norms"
    assert op_category("m/encoder_0/ffn/Gelu/Erfc", "Erfc") == "gelu"
    assert op_category("m/x/transpose", "Transpose").startswith("transposes")
    # the mixed policy's dtype conversions are a piece of their own, whatever scope they sit in
    assert op_category("m/encoder_0/ffn/Cast", "Cast") == "casts (dtype conversions)"


def test_profile_table_sets_bfloat16_beside_float32():
    from bench.train_efficiency import profile_table

    f32 = {"categories_pct": {"matmuls (dense + attention)": 60.0, "gelu": 40.0}, "op_seconds": 2.0}
    bf16 = {"categories_pct": {"matmuls (dense + attention)": 30.0, "gelu": 50.0, "casts (dtype conversions)": 20.0},
            "op_seconds": 1.0}
    lines = profile_table(f32, bf16).splitlines()
    row = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in lines[2:]}
    assert row["matmuls (dense + attention)"] == ["60.0%", "30.0%", "1.20 -> 0.30"]
    assert row["casts (dtype conversions)"] == ["0.0%", "20.0%", "0.00 -> 0.20"]  # only in bfloat16
    assert row["total"] == ["100%", "100%", "2.00 -> 1.00"]
    assert len(profile_table(f32).splitlines()[0].split("|")) == 4  # float32 alone: piece and share


def test_markdown_puts_the_bfloat16_xla_row_after_the_bfloat16_one():
    from bench.train_efficiency import markdown

    fit = {"params_total": 10, "params_non_embedding": 4, "step_s": 2.0, "first_step_s": 30.0,
           "tokens_per_s": 1000.0, "jit_compile": False}
    result = {"encoder": {"num_layers": 6, "hidden_dim": 384, "num_heads": 12, "intermediate_dim": 1536},
              "seq": 128, "batch": 32, "backend": "tensorflow", "fit": fit, "flops_per_token": 6e7,
              "achieved_gflops": 60.0, "matmul_gflops": 200.0, "numpy_gflops": 190.0, "mfu_pct": 30.0,
              "mfu_vs_numpy_pct": 31.6,
              "fit_bf16": {"step_s": 1.0, "tokens_per_s": 2000.0, "achieved_gflops": 120.0,
                           "matmul_bf16_gflops": 400.0, "mfu_bf16_pct": 30.0, "first_step_s": 20.0}}
    assert "mixed_bfloat16` with jit_compile=True" not in markdown(result)  # not measured: no row
    result["fit_xla_bf16"] = {"step_s": 0.8, "tokens_per_s": 2500.0, "mfu_bf16_pct": 37.5, "first_step_s": 40.0}
    rows = [line for line in markdown(result).splitlines() if line.startswith("| (info)")]
    assert "mixed_bfloat16`" in rows[-2] and "jit_compile=True (XLA)" in rows[-1]
    assert "2500 tokens/s (1.25x without XLA), 37.5% of the bfloat16 matmul rate" in rows[-1]


def test_flops_formula():
    from bench.train_efficiency import flops_per_token

    # 6 N + 12 L d S
    assert flops_per_token(1000, 2, 8, 16) == 6 * 1000 + 12 * 2 * 8 * 16


def test_model_gflops_is_flops_per_token_times_tokens_per_second():
    from bench.train_efficiency import model_gflops

    assert model_gflops(67_428_876, 1444.0) == pytest.approx(97.37, abs=0.01)  # BENCHMARKS 9, EPYC run 1


@pytest.mark.slow
def test_train_efficiency(tmp_path, capsys):
    from bench import train_efficiency

    result = _run(train_efficiency, tmp_path)
    assert result["fit"]["step_s"] > 0 and result["mfu_pct"] > 0
    assert result["flops_per_token"] == 6 * result["fit"]["params_non_embedding"] + 12 * 1 * 32 * 16
    shares = result["profile"]["trace"]["categories_pct"]
    assert "matmuls (dense + attention)" in shares and sum(shares.values()) == pytest.approx(100.0)
    assert result["profile"]["layer_matmul_gflops"] > 0
    assert "TARGET MFU" in capsys.readouterr().out


@pytest.mark.slow
def test_mtl_overhead(tmp_path, capsys):
    from bench import mtl_overhead

    result = _run(mtl_overhead, tmp_path)
    assert set(result["step_s"]) == {
        "plain keras-hub (1 task)",
        "keras-mtl, 3 tasks, conditioning none",
        "keras-mtl, 3 tasks, conditioning embedding",
    }
    assert len(result["targets"]) == 2
    assert "TARGET overhead" in capsys.readouterr().out


def test_padding_demo(tmp_path, capsys):
    from bench import padding

    result = _run(padding, tmp_path)
    variants = result["variants"]
    # training buckets, auto with 4/8/12/16 (one of them may be the training set-up),
    # every 16/8/4 tokens, pad to max, pad to batch max, packing
    assert 10 <= len(variants) <= 11, list(variants)
    assert next(iter(variants)).startswith("buckets ") and "(training" in next(iter(variants))
    assert result["packing_vs_buckets"]["attention_pairs_ratio"] > 0
    for w in variants.values():
        assert 0.0 <= w["padded_pct"] < 100.0
    to_max = next(v for k, v in variants.items() if k.startswith("pad to max"))
    batch_max = variants["pad to batch max"]
    assert batch_max["padded_pct"] <= to_max["padded_pct"]  # same examples, never longer
    assert "TARGET padded tokens with bucketing" in capsys.readouterr().out


def test_padding_skips_without_data(tmp_path, capsys):
    from bench import padding

    cfg = tmp_path / "nodata.yaml"
    cfg.write_text(
        "name: nodata\ntasks:\n  - name: s\n    type: classification\n"
        "    data: {format: delimited, train: /nonexistent/dir/train.tsv}\n",
        encoding="utf-8",
    )
    result = _run(padding, tmp_path, "--config", str(cfg))
    assert "absent" in result["skipped"]
    assert "SKIPPED" in capsys.readouterr().out


def test_packing():
    from bench.padding import pack, packing_stats

    rows = pack([5, 5, 3, 7, 2], capacity=10, window=100)
    assert sorted(sum(r) for r in rows) == [2, 10, 10]  # FFD: 7+3, 5+5, 2
    stats = packing_stats([5, 5, 3, 7, 2], 10, batch=2, window=100)
    assert stats["padded_pct"] == pytest.approx(100 * (30 - 22) / 30)


@pytest.mark.slow
def test_long_inputs(tmp_path, capsys):
    """The tiny smoke of the long-text measurement (one task, one variant: windows, central)."""
    from bench import long_inputs

    result = _run(long_inputs, tmp_path, "--tasks", "pos", "--variants", "central", "--workdir", str(tmp_path / "runs"))
    if "skipped" in result:  # ../shared/data absent
        return
    score = result["scores"]["pos"]["16, windows (central)"]
    assert 0 < score <= 1 and result["runs"]["pos-central"]["windowed_test_sentences"] > 0
    assert "| pos | 16, windows (central) |" in long_inputs.markdown(result)


@pytest.mark.slow
def test_serving(tmp_path, capsys):
    from bench import serving

    result = _run(serving, tmp_path)
    assert result["tasks"] == ["topic", "pos"]
    assert [b["batch"] for b in result["by_batch"]] == [1, 32]
    for b in result["by_batch"]:
        assert b["speedup"]["mtl"] > 0 and all(v > 0 for v in b["texts_per_s"].values())
    long_texts = result["long_texts"]  # a 1-window and a 10-window text (issue 28)
    assert long_texts["ten_window_words"] > long_texts["one_window_words"]
    assert [(b["signature"], b["batch"]) for b in long_texts["by_batch"]] == [("serving_default", 1), ("serving_default", 32), ("pos", 1), ("pos", 32)]
    assert all(b["ratio"] > 1 and b["ratio_shared"] > 1 for b in long_texts["by_batch"])
    assert long_texts["ten_shared_words"] > long_texts["one_window_words"]
    out = capsys.readouterr().out
    assert "TARGET serving speedup" in out and "TARGET cost of a 10-window text vs a 1-window one, pos, batch 1" in out


@pytest.mark.slow
def test_backends(tmp_path, capsys):
    from bench import backends

    result = _run(backends, tmp_path, "--backends", "tensorflow,notabackend")
    assert result["backends"]["notabackend"]["skipped"] == "notabackend not installed"
    tf = result["backends"]["tensorflow"]
    assert tf["step_s"] > 0 and tf["first_step_s"] > 0, tf
    out = capsys.readouterr().out
    assert "notabackend not installed" in out and "TARGET tensorflow step time vs fastest" in out


@pytest.mark.slow
def test_peer(tmp_path, capsys):
    """keras-mtl vs transformers + PyTorch on a random tiny BERT both sides load (--tiny: ~1 min on 2 cores)."""
    import importlib.util

    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:  # looked up, not imported: the benchmark runs them in subprocesses
        pytest.skip(f"{' and '.join(missing)} not installed (pip install -e '.[torch,peer]'): bench/peer.py needs them")
    from bench import peer

    result = _run(peer, tmp_path)
    assert result["seqs"] == [16] and result["encoder"]["hidden_dim"] == 32
    rows = result["training"]
    assert not [r for r in rows if "error" in r], rows
    runtimes = {(r["system"], r["runtime"], r["precision"]) for r in rows}
    assert {
        ("keras-mtl", "tensorflow", "float32"), ("keras-mtl", "tensorflow", "bf16"), ("keras-mtl", "jax", "float32"),
        ("transformers", "torch eager", "float32"), ("transformers", "torch eager", "bf16"),
        ("transformers", "torch.compile (aot_eager)", "float32"), ("transformers", "torch.compile (aot_eager)", "bf16"),
    } <= runtimes, runtimes
    for r in rows:
        assert r["tokens_per_s"] > 0 and r["first_step_s"] > 0 and len(r["step_times_s"]) == 2
        assert r["vs_peer"] > 0
    for side in ("keras-mtl", "transformers"):
        single, multi = result["serving"][side]["single"], result["serving"][side]["multitask"]
        assert [b["batch"] for b in single["by_batch"]] == [1, 4] and len(multi["tasks"]) == 4
        for b in single["by_batch"] + multi["by_batch"]:
            assert b["texts_per_s"] > 0 and 0 < b["p50_ms"] <= b["p99_ms"]
    assert result["serving"]["keras-mtl"]["multitask"]["tasks"] == ["task0", "task1", "task2", "task3"]
    labels = [t["label"] for t in result["targets"]]
    assert any(label.startswith("training tokens/s, float32") for label in labels)
    assert "serving p99 latency at batch 1: keras-mtl / transformers" in labels
    text = peer.markdown(result)
    assert "**Training**" in text and "**Serving**" in text and "torch.compile (aot_eager)" in text
    assert f"Machine: {result['machine']['cpu']}" in text  # section 9 may come from another machine
    out = capsys.readouterr().out
    assert "TARGET training tokens/s" in out and "TARGET serving texts/s at batch 4" in out


def test_peer_skips_without_transformers(tmp_path, monkeypatch, capsys):
    import importlib.util

    from bench import peer

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "transformers" else real(name, *a))
    result = _run(peer, tmp_path)
    assert result["skipped"].startswith("transformers not installed")
    assert peer.markdown(result).startswith("Skipped: transformers not installed")
    assert "SKIPPED" in capsys.readouterr().out


def test_data_scale_generates_the_synthetic_tasks(tmp_path, capsys):
    """--tiny, generation only (fast): the data of the issue's shape; the other figures n/a, not guessed."""
    from bench import data_scale

    result = _run(data_scale, tmp_path, "--parts", "generate", "--workdir", str(tmp_path / "work"))
    assert result["size_list"] == [3000] and result["parts"] == ["generate"]
    lines = (tmp_path / "work" / "3000" / "reviews.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "sentence\tlabel" and len(lines) == 3001
    rows = [line.split("\t") for line in lines[1:]]
    assert all(8 <= len(text.split()) <= 30 for text, _ in rows)
    assert {label for _, label in rows} == {"negative", "neutral", "positive"}
    sentences = (tmp_path / "work" / "3000" / "tags.conll").read_text(encoding="utf-8").split("\n\n")
    assert len([s for s in sentences if s.strip()]) == 60  # the small second task: 2% of the rows
    # deterministic: the same bytes again
    again = tmp_path / "again.tsv"
    data_scale.generate_classification(again, 3000, seed=3000)
    assert again.read_text(encoding="utf-8").splitlines() == lines
    assert all(t["value"] is None and t["met"] is None for t in result["targets"])  # nothing measured: n/a
    assert "| 3,000 |" in data_scale.markdown(result)
    assert "TARGET preparation examples/s / datasets peer" in capsys.readouterr().out


@pytest.mark.slow
def test_data_scale_measures_train_prepare_and_the_peer(tmp_path, capsys):
    """--tiny, every part (about a minute on 2 cores: three TensorFlow start-ups)."""
    import importlib.util

    from bench import data_scale

    result = _run(data_scale, tmp_path, "--workdir", str(tmp_path / "work"))
    size = result["sizes"]["3000"]
    assert size["train"]["peak_rss_mb"] > 0 and size["train"]["first_step_s"] > 0 and "error" not in size["train"]
    cold, warm = size["prepare"]["cold"], size["prepare"]["warm"]
    assert cold["rows_written"] > 3000 and cold["examples_per_s"] > 0 and "error" not in cold
    assert 0 < warm["first_rows_s"] and warm["first_rows"] > 0
    if importlib.util.find_spec("datasets") and importlib.util.find_spec("transformers"):
        assert size["peer"]["rows"] == 3000 and size["peer"]["fast"] and size["peer"]["examples_per_s"] > 0
    labels = {t["label"]: t for t in result["targets"]}
    warm_train = size["train_warm"]  # a second train in a new work dir, reading the entry the first wrote
    assert warm_train["first_step_s"] > 0 and "error" not in warm_train
    share = labels["warm first step / cold first step at 3,000 rows"]["value"]
    assert share == pytest.approx(warm_train["first_step_s"] / size["train"]["first_step_s"])
    assert "TARGET train peak RSS" in capsys.readouterr().out


def test_run_all_regenerates_only_between_markers(tmp_path):
    from bench import run_all

    md = tmp_path / "B.md"
    md.write_text(
        "# Benchmarks\nintro stays\n<!-- bench:machine -->\nOLD TABLE\n<!-- /bench:machine -->\noutro stays\n",
        encoding="utf-8",
    )
    status = run_all.main(["--tiny", "--only", "machine", "--results-dir", str(tmp_path), "--markdown", str(md)])
    assert status == 0
    text = md.read_text()
    assert "OLD TABLE" not in text and "matmul GFLOP/s (float32 unless named)" in text
    assert text.startswith("# Benchmarks\nintro stays\n") and "outro stays" in text
    assert "<!-- bench:summary -->" in text and "<!-- bench:machine-info -->" in text
    # Regenerating again is stable (no duplicated blocks).
    run_all.main(["--markdown-only", "--results-dir", str(tmp_path), "--markdown", str(md)])
    assert md.read_text().count("<!-- bench:machine -->") == 1


@pytest.mark.slow
def test_methods_table(tmp_path, capsys):
    from bench import methods

    result = _run(methods, tmp_path, "--workdir", str(tmp_path / "runs"), "--only", "gates,pcgrad")
    assert list(result["table"]) == ["hard", "gates", "pcgrad"]  # the reference row comes first
    assert result["tasks"] == ["topic", "sentiment", "pos"]
    for key, seeds in result["runs"].items():
        assert len(seeds) == 1 and seeds[0]["steps"] == 10
        assert all(0.0 <= v <= 1.0 for v in seeds[0]["dev"].values()), (key, seeds)
    assert result["table"]["pcgrad"]["seconds_per_step"] > 0
    text = methods.markdown(result)
    assert "| loss weighting | PCGrad (Yu et al.) |" in text and "1.00x" in text
    # a finished run is reused, not trained again
    again = _run(methods, tmp_path, "--workdir", str(tmp_path / "runs"), "--only", "gates")
    assert again["runs"]["gates"] == result["runs"]["gates"]
    assert "reusing" in capsys.readouterr().out


@pytest.mark.slow
def test_precision_quality(tmp_path, capsys):
    import shutil

    from bench import precision_quality

    records = tmp_path / "records"
    args = ("--candidate", "mixed_bfloat16", "--records", str(records))
    result = _run(precision_quality, tmp_path, "--workdir", str(tmp_path / "a"), *args)
    assert result["candidate_policy"] == "mixed_bfloat16" and result["steps"] == 8  # demo: 4 epochs, capped at 10
    boot = result["bootstrap"]
    assert set(boot["tasks"]) == {"topic", "sentiment", "pos"}
    for t, row in boot["tasks"].items():  # the gain is the candidate's score minus float32's, on the same examples
        assert row["gain"]["point"] == pytest.approx(
            result["per_seed"]["mixed_bfloat16"][t][0] - result["per_seed"]["float32"][t][0], abs=1e-9)
    assert result["targets"][0]["met"] == (not any(r["verdict"] == "worse" for r in boot["tasks"].values())
                                           and boot["delta_m"]["verdict"] != "worse")
    assert "| pos | token_accuracy |" in precision_quality.markdown(result)
    capsys.readouterr()
    # A comparison's recorded multi-task run with the identical config is the float32 run; the
    # candidate comes from --records: a new work dir trains nothing.
    compare_records = tmp_path / "compare"
    shutil.copytree(records / "seed0" / "float32", compare_records / "seed0" / "mtl")
    again = _run(precision_quality, tmp_path, "--workdir", str(tmp_path / "b"), *args,
                 "--compare-records", str(compare_records))
    out = capsys.readouterr().out
    assert "recorded in" in out and "trained" not in out
    assert again["per_seed"] == result["per_seed"] and again["reused_from"]


def test_precision_quality_refuses_an_unknown_candidate(tmp_path, capsys):
    from bench import precision_quality

    with pytest.raises(SystemExit):
        precision_quality.main(["--tiny", "--results-dir", str(tmp_path), "--candidate", "bfloat16"])
    err = capsys.readouterr().err
    assert "--candidate: unknown precision 'bfloat16'" in err and "mixed_bfloat16" in err
    assert not (tmp_path / "precision_quality.json").exists()  # nothing trained, nothing written


def test_methods_unknown_row_lists_the_rows(tmp_path, capsys):
    from bench import methods

    with pytest.raises(SystemExit):
        methods.main(["--tiny", "--results-dir", str(tmp_path), "--only", "nope"])
    err = capsys.readouterr().err
    assert "unknown row(s) nope" in err and "pcgrad" in err and "annealed" in err
