"""`keras-mtl prepare CONFIG`: write a config's prepared data to the cache; `--list`, `--clear`.

    keras-mtl prepare configs/x.yaml [--cache-dir DIR] [--set KEY=VALUE ...]
    keras-mtl prepare --list [CONFIG] [--cache-dir DIR]
    keras-mtl prepare --clear [CONFIG | --key KEY] [--cache-dir DIR]

The cache is `keras_mtl.data.cache` (docs/data_at_scale.md). `prepare CONFIG`
writes the entry that `train`, `evaluate`, `compare`, `search` and
`meta-train` read (`keras_mtl.prepare.write_entry`: the first of them writes
it when it is missing, so running this first is optional).
"""

import time

from keras_mtl.config import load_config
from keras_mtl.data import cache as cache_lib
from keras_mtl.errors import ConfigError

HELP = ("write a config's tokenized, label-encoded splits to the prepared cache that train, evaluate "
        "and the others read (--list, --clear)")


def add_arguments(parser):
    parser.add_argument("config", nargs="?", help="experiment YAML (optional with --list and --clear)")
    parser.add_argument("--list", action="store_true", help="list the cache's entries: key, config, created, size, rows")
    parser.add_argument("--clear", action="store_true",
                        help="remove the entry of --key KEY, else of CONFIG, else every entry of the cache")
    parser.add_argument("--key", help="with --clear: the entry to remove (its key, or the start of it)")
    parser.add_argument("--cache-dir", help="the cache directory (default: the config's cache.dir, "
                                            "else $KERAS_MTL_CACHE, else ~/.cache/keras-mtl)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")


def _size(n):
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def _rows(rows):
    return "/".join(f"{rows[s]:,}" for s in cache_lib.SPLITS if s in rows) or "-"


def list_entries(cache):
    """The lines of `prepare --list`."""
    infos = cache.entries()
    if not infos:
        return [f"cache: {cache.directory}: no entries"]
    table = [("KEY", "CONFIG", "CREATED", "SIZE", "ROWS (train/dev/test)", "STATE")]
    table += [(i.key, i.name or "-", i.created or "-", _size(i.bytes), _rows(i.rows), i.state) for i in infos]
    widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    total = sum(i.bytes for i in infos)
    count = sum(i.state == "ok" for i in infos)
    lines.append(f"cache: {cache.directory} ({count} complete {'entry' if count == 1 else 'entries'}, {_size(total)})")
    return lines


def run(args):
    if args.list and args.clear:
        raise ConfigError("--list and --clear go alone: give one of them")
    if args.key is not None and not args.clear:
        raise ConfigError("--key goes with --clear (the entry to remove)")
    if args.config is None and not (args.list or args.clear):
        raise ConfigError("give CONFIG to prepare, or --list / --clear")
    if args.key is not None and args.config is not None:
        raise ConfigError("--clear takes CONFIG or --key KEY, not both")
    loaded = load_config(args.config, args.set) if args.config is not None else None
    if args.cache_dir is not None:
        directory = cache_lib.cache_dir(args.cache_dir)
    elif loaded is not None:
        directory = cache_lib.cache_dir(loaded.config.cache.dir, base=loaded.path.parent if loaded.path else None)
    else:
        directory = cache_lib.default_dir()
    cache = cache_lib.Cache(directory)

    if args.list:
        print("\n".join(list_entries(cache)))
        return 0
    if args.clear:
        if args.key is not None:
            key = cache.find(args.key)
        elif loaded is not None:
            key = cache_lib.data_key(loaded.config).digest
        else:
            key = None
        removed = cache.clear(key)
        what = "every entry" if key is None else f"entry {key}"
        print(f"cache: {cache.directory}: removed {len(removed)} director{'y' if len(removed) == 1 else 'ies'} "
              f"({what})")
        return 0

    from keras_mtl.prepare import write_entry  # lazy: imports TensorFlow (start-up time of --help, --list, --clear)

    config = loaded.config
    start = time.monotonic()
    entry, built = write_entry(loaded, cache)  # the entry `train` and the other commands read
    seconds = time.monotonic() - start
    rows = {s: entry.rows(s) for s in entry.splits}
    print(f"prepared data of {config.name}: {len(config.tasks)} task(s), rows {_rows(rows)} (train/dev/test), "
          f"{_size(entry.bytes)}")
    if built:
        print(f"written in {seconds:.1f} s ({sum(rows.values()) / max(seconds, 1e-9):,.0f} examples/s, "
              f"reading and encoding included)")
    else:
        print("already in the cache: nothing to do")
    print(f"key {entry.key} in {cache.directory}")
    return 0
