"""Run every benchmark and regenerate the tables of BENCHMARKS.md.

    python bench/run_all.py                 # realistic sizes (~10-15 min on 2 idle cores)
    python bench/run_all.py --tiny --no-markdown --results-dir /tmp/b   # smoke test
    python bench/run_all.py --only padding,serving
    python bench/run_all.py --only methods  # the methods table (about 1.5 hours on 2 cores; not in a plain run)
    python bench/run_all.py --only peer     # keras-mtl vs transformers + PyTorch (needs the peer and torch extras; not in a plain run)
    python bench/run_all.py --only precision_quality  # glue_conll float32 vs train.precision: auto, 3 seeds (not in a plain run)
    python bench/run_all.py --only data_scale  # 0.3M and 3M rows: train RSS, prepare throughput vs `datasets` (not in a plain run)
    python bench/run_all.py --markdown-only # rewrite BENCHMARKS.md from bench/results/*.json

Each script runs in its own subprocess (one Keras backend and a fresh
TensorFlow per process), prints its figures and targets, and writes
<results-dir>/<name>.json; then the text between the markers
`<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in BENCHMARKS.md is replaced
by that result's table (and `<!-- bench:summary -->` by the table of every
target, `<!-- bench:machine-info -->` by the machine). The same tables are
printed at the end.
"""

import importlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

SCRIPTS = ("machine", "train_efficiency", "mtl_overhead", "padding", "serving", "backends", "methods", "peer",
           "precision_quality", "data_scale")
# Not in a plain run: methods (about 1.5 hours on 2 cores: 74 min of fit alone), peer (16 MiniLM
# training runs on 4 runtimes plus serving; needs `transformers` and torch) and precision_quality
# (3 to 6 glue_conll trainings of about 4 minutes) and data_scale (0.3M and 3M rows generated, trained on, prepared
# and tokenized by the `datasets` peer; 0.3M alone took 202 s on 2 cores): ask with --only methods / peer /
# precision_quality / data_scale.
LONG = ("methods", "peer", "precision_quality", "data_scale")
# Scripts that rewrite BENCHMARKS.md themselves unless told not to (run_all writes it once, at the end).
OWN_MARKDOWN = ("methods",)
TITLES = {
    "machine": "Machine limit (float32 matmul)",
    "train_efficiency": "Training efficiency (MFU)",
    "mtl_overhead": "Multi-task overhead",
    "padding": "Padding waste",
    "serving": "Serving",
    "backends": "Backends",
    "methods": "Multi-task methods",
    "peer": "Ahead of the peer (keras-mtl vs transformers + PyTorch)",
    "precision_quality": "Does bfloat16 cost quality? (glue_conll, float32 vs train.precision: auto)",
    "data_scale": "Data at production scale (0.3M and 3M rows; vs Hugging Face datasets)",
}
BENCHMARKS_MD = common.ROOT / "BENCHMARKS.md"


def run_script(name, tiny, results_dir, extra=(), timeout=1800):
    cmd = [sys.executable, str(common.ROOT / "bench" / f"{name}.py"), "--results-dir", str(results_dir), *extra]
    if tiny:
        cmd.append("--tiny")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.setdefault("KERAS_BACKEND", "tensorflow")
    start = time.time()
    try:
        proc = subprocess.run(cmd, env=env, timeout=timeout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out, rc = proc.stdout, proc.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), 124
    # Keep our own lines, drop TensorFlow/absl start-up noise.
    for line in out.splitlines():
        if not re.match(r"^(I0000|W0000|E0000|WARNING: All log messages|.*cudart_stub|.*cpu_feature_guard|To enable the following)", line):
            print(line, flush=True)
    return rc, time.time() - start


def section(name, result):
    module = importlib.import_module(f"bench.{name}")
    lines = [module.markdown(result)]
    targets = common.targets_table(result)
    if targets:
        lines += ["", targets]
    lines += ["", f"{common.load_note(result)} Finished {result.get('finished', '?')} in {result.get('seconds', 0):.0f} s. "
              f"Command: `{result['command']}`."]
    return "\n".join(lines)


def summary(results):
    rows = []
    for name in SCRIPTS:
        r = results.get(name)
        if not r:
            continue
        if r.get("skipped"):
            rows.append([TITLES[name], "skipped", "-", r["skipped"][:60]])
        for t in r.get("targets", []):
            value = "n/a" if t["value"] is None else f"{t['value']:.3g}{t['unit']}"
            status = "n/a" if t["met"] is None else ("met" if t["met"] else "**missed**")
            rows.append([t["label"], value, f"{t['op']} {t['target']:g}{t['unit']}", status])
    return common.md_table(["figure", "measured", "target", "status"], rows)


def machine_section(results):
    r = next((x for x in results.values() if x), None)
    if not r:
        return "(no results)"
    m = r["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    # The long runs (the methods table) carry their own load note.
    runs = [x for n, x in results.items() if x and n not in LONG] or [x for x in results.values() if x]
    loads = [max(x["loadavg_start"][0], x.get("loadavg_end", [0])[0]) for x in runs]
    return (
        f"- CPU: {m['cpu']} ({', '.join(m['cpu_flags'])}), {m['cores']} cores, {m['memory_gib']} GiB\n"
        f"- Python {m['python']}; {versions}\n"
        f"- Load average during the efficiency runs (sections 2-7): {min(loads):.1f} to {max(loads):.1f} "
        f"({'other processes were sharing the machine: absolute figures are pessimistic, ratios are measured within each run' if max(loads) > common.busy_load(m['cores']) else 'machine otherwise idle: a benchmark by itself keeps the load near the core count'})"
    )


def replace_block(text, key, body):
    pattern = re.compile(rf"(<!-- bench:{re.escape(key)} -->\n)(.*?)(<!-- /bench:{re.escape(key)} -->)", re.S)
    if not pattern.search(text):
        return text + f"\n<!-- bench:{key} -->\n{body}\n<!-- /bench:{key} -->\n"
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(3), text)


def update_markdown(results, path):
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    text = replace_block(text, "machine-info", machine_section(results))
    text = replace_block(text, "summary", summary(results))
    for name in SCRIPTS:
        if results.get(name):
            text = replace_block(text, name, section(name, results[name]))
    path.write_text(text, encoding="utf-8")
    return path


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--only", help="comma-separated subset of: " + ", ".join(SCRIPTS))
    p.add_argument("--markdown", default=str(BENCHMARKS_MD), help="the file whose tables are regenerated")
    p.add_argument("--no-markdown", action="store_true")
    p.add_argument("--markdown-only", action="store_true", help="do not run; regenerate from the saved results")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else [n for n in SCRIPTS if n not in LONG]
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(SCRIPTS)}")
    results_dir = Path(args.results_dir)
    failed = []
    if not args.markdown_only:
        started = time.time()
        for name in names:
            print(f"\n######## {name} ########", flush=True)
            timeout = None if name in LONG and not args.tiny else 1800
            extra = (["--quiet"] if args.quiet else []) + (["--no-markdown"] if name in OWN_MARKDOWN else [])
            rc, secs = run_script(name, args.tiny, results_dir, extra, timeout=timeout)
            print(f"######## {name}: exit {rc} in {secs:.0f} s", flush=True)
            if rc != 0:
                failed.append(name)
        print(f"\nall benchmarks: {time.time() - started:.0f} s, load average {os.getloadavg()[0]:.2f}", flush=True)
    results = {name: common.load_result(name, results_dir) for name in SCRIPTS}
    print("\n## Summary\n\n" + summary(results))
    for name in names:
        if results.get(name):
            print(f"\n## {TITLES[name]}\n\n" + section(name, results[name]))
    if not args.no_markdown:
        print(f"\nupdated {update_markdown(results, args.markdown)}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
