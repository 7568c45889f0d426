"""The prepared cache: every task's splits, tokenized and label-encoded, on disk.

The first run of a config (or `keras-mtl prepare CONFIG`) writes what reading,
splitting, tokenizing and label-encoding gave; later runs of a config with the
same inputs open it instead of doing that work again (issue 27; the layout,
the key and the protocol are in docs/data_at_scale.md).

    cache = Cache(cache_dir(config.cache.dir, base=config_file.parent))
    key = data_key(config)                   # what determines the rows
    entry, built = cache.get_or_write(key, build)   # build() -> EntryData, called only if needed
    dataset = read_split(entry, "train", num_processes=2, process_id=0)

An entry is a directory `<cache dir>/<key>/` of flat little-endian numpy
column files, a few per shard (`<split>/<shard>/<column>.values`, plus
`.offsets` for a column that holds a list a row), and `manifest.json`, written
last, that lists every file with its size and SHA-256. An entry appears whole
or not at all: it is written into `<key>.tmp-<host>-<pid>-<token>/` and renamed
to `<key>/` once complete, under an exclusive `fcntl` lock on `<key>.lock`, so
two writers never both write it and a reader never sees half of it. A
temporary left by a killed writer is removed by the next writer of that key
(who holds the lock, so no live writer owns it) or by `clear()`. An entry
whose files do not match its manifest (truncated, a flipped byte, a missing
file, no manifest) is reported once, removed and rebuilt: never read.

The package imports no TensorFlow at its top: `keras-mtl prepare --list` and
`--clear` answer in a fraction of a second, and writing needs numpy only.
`read_split` imports TensorFlow when called.
"""

from keras_mtl.data.cache.entry import (
    BLOCK_ROWS, DTYPES, MANIFEST, SHARD_ROWS, CacheEntry, Column, ColumnBlock, EntryData, check_entry,
)
from keras_mtl.data.cache.key import (
    ENCODING_VERSION, ENV_VAR, FORMAT_VERSION, MODEL_FIELDS, SPLITS, CacheKey, cache_dir, data_key, default_dir,
    file_identity, fingerprint, source_identity,
)
from keras_mtl.data.cache.read import blocks_of, iter_blocks, read_rows, read_split, row_lengths, share
from keras_mtl.data.cache.store import Cache, EntryInfo

__all__ = [
    "BLOCK_ROWS", "Cache", "CacheEntry", "CacheKey", "Column", "ColumnBlock", "DTYPES", "ENCODING_VERSION", "ENV_VAR",
    "EntryData", "EntryInfo", "FORMAT_VERSION", "MANIFEST", "MODEL_FIELDS", "SHARD_ROWS", "SPLITS", "blocks_of", "cache_dir",
    "check_entry", "data_key", "default_dir", "file_identity", "fingerprint", "iter_blocks", "read_rows",
    "read_split", "row_lengths", "share", "source_identity",
]
