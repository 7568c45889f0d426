"""Deterministic train/dev/test splits made jointly across tasks.

Tasks often share sentences (e.g. 4,175 of the 5,000 subjective sentences of
the Pang & Lee subjectivity data are also in the polarity data). If each task
were split at random on its own, a test sentence of one task would be a
training sentence of the other. Here the split of a sentence depends only on
its normalized text and a seed, so a sentence shared by two tasks lands in the
same split in both. A sentence pair is keyed by both of its texts (see
`example_key`); a single text is keyed, and hashed, exactly as before pairs
existed.

At scale the texts are compared through 16-byte hashes of their keys
(`example_hash`), never through sets of whole texts: the leak report, the
removal of held-out texts (`splits.leaks: drop`) and the merge of identical
examples across tasks (`texts_hash`, in `load.merge_by_text`) hold 16 bytes
per distinct text. Two different keys share a hash with probability about
n² / 2^129 (1e-26 for ten million texts), so the results are those of
comparing the keys themselves.
"""

import hashlib
import itertools
import struct

import numpy as np

from keras_mtl.errors import DataError

SPLITS = ("train", "dev", "test")

HASH_BYTES = 16  # the size of `example_hash` and `texts_hash`
_EXAMPLE_SALT = b"keras-mtl example key\x00"
_TEXTS_SALT = b"keras-mtl texts\x00"


def normalize_text(text):
    """The form of a text used to detect the same sentence in two places.

    Lowercases the text, replaces each run of whitespace by one space and
    strips leading and trailing whitespace. Punctuation is kept.

    Example:

    >>> normalize_text("  The  Rock\\tis HERE .\\n")
    'the rock is here .'
    """
    return " ".join(text.lower().split())


def example_key(text, text_pair=None):
    """The normalized key of an example: its text, or both texts of a pair.

    A single text (`text_pair` None) is keyed by `normalize_text(text)`
    alone, so its split and its leak-report entry are what they were before
    sentence pairs existed. A pair is keyed by both normalized texts joined
    by a tab; a normalized text never holds a tab, so a pair's key differs
    from every single text's key and from every other pair's key.

    >>> example_key("A  man .", "A Dog .")
    'a man .\\ta dog .'
    """
    if text_pair is None:
        return normalize_text(text)
    return f"{normalize_text(text)}\t{normalize_text(text_pair)}"


def _utf8(text):
    return text.encode("utf-8", "surrogatepass")


def example_hash(text, text_pair=None):
    """The 16-byte hash of `example_key(text, text_pair)`: equal for the same
    normalized text (pair), what the leak report and `splits.leaks: drop` compare.

    BLAKE2b with a 16-byte digest. It is not the hash `split_of` draws a split
    from (that one is seeded: see `_unit_interval`), so the split of a text is
    what it always was.

    >>> example_hash("The  Rock") == example_hash("the rock") != example_hash("the rock", "")
    True
    """
    return hashlib.blake2b(_EXAMPLE_SALT + _utf8(example_key(text, text_pair)), digest_size=HASH_BYTES).digest()


def texts_hash(text, text_pair=None):
    """The 16-byte hash of the exact (text, text_pair): equal for identical
    examples as `Example.texts` compares them (no normalization), what the merge
    across tasks (`load.merge_by_text`) keys on.

    The text is length-prefixed and a single text is told from a pair by a
    marker byte, so no two different (text, text_pair) give the same bytes.
    """
    first = _utf8(text)
    parts = [_TEXTS_SALT, struct.pack(">Q", len(first)), first]
    if text_pair is None:
        parts.append(b"\x00")
    else:
        parts += [b"\x01", _utf8(text_pair)]
    return hashlib.blake2b(b"".join(parts), digest_size=HASH_BYTES).digest()


def _check_fractions(dev_fraction, test_fraction):
    for name, value in (("dev_fraction", dev_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    if dev_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"dev_fraction + test_fraction must be below 1, got "
            f"{dev_fraction} + {test_fraction}"
        )


def _unit_interval(text, seed, text_pair=None):
    """A number in [0, 1) from a stable hash of `seed` and the example's key."""
    key = f"{seed}\x00{example_key(text, text_pair)}".encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(key).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(text, seed, dev_fraction, test_fraction, text_pair=None):
    """The split ("train", "dev" or "test") a text belongs to.

    The text's normalized form (see `normalize_text`) and `seed` are hashed
    with SHA-256 to a number u in [0, 1): u < test_fraction is "test",
    u < test_fraction + dev_fraction is "dev", anything else "train". The
    result does not depend on the process, the platform or the task, so the
    same sentence gets the same split wherever it appears. A sentence pair
    hashes both texts (`example_key`), so the same pair lands in the same
    split in every task.

    Args:
        text: the example's text.
        seed: an int; a different seed gives a different split.
        dev_fraction: the expected fraction of texts in "dev".
        test_fraction: the expected fraction of texts in "test".
        text_pair: the second text of a sentence pair; None (a single
            text) hashes the text alone, as before pairs existed.

    Example:

    >>> split_of("A fine film .", seed=0, dev_fraction=0.1, test_fraction=0.1)
    'train'
    """
    _check_fractions(dev_fraction, test_fraction)
    u = _unit_interval(text, seed, text_pair)
    if u < test_fraction:
        return "test"
    if u < test_fraction + dev_fraction:
        return "dev"
    return "train"


def carve_splits(examples_by_split, seed, dev_fraction, test_fraction):
    """Carve the missing dev and/or test split out of train.

    Only the splits missing from `examples_by_split` (absent or None) are
    carved; a split the files provide is kept as is and its fraction is not
    used. A train example goes to a missing split when `split_of` (with both
    fractions) assigns it there, and stays in train otherwise: the hash bands
    are the same in every task, so a sentence shared by two tasks that both
    carve the same split lands on the same side in both. A carved split whose
    fraction is 0 is not created. The order of examples is kept.

    Args:
        examples_by_split: dict with some of "train", "dev", "test" mapping to
            lists of `Example`s; "train" is required.
        seed: the split seed.
        dev_fraction: fraction of train to carve as dev, if dev is missing.
        test_fraction: fraction of train to carve as test, if test is missing.

    Returns:
        A new dict with "train" and whichever of "dev"/"test" exist, in that
        order.

    Raises:
        ValueError: a key other than train/dev/test, or bad fractions.
        DataError: there is no train data, or carving left train empty.
    """
    unknown = set(examples_by_split) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split names {sorted(unknown)}; expected {SPLITS}")
    _check_fractions(dev_fraction, test_fraction)
    train = examples_by_split.get("train")
    if not train:
        raise DataError("no training examples: the task needs a non-empty train split")
    missing = missing_splits(examples_by_split, dev_fraction, test_fraction)
    result = {split: [] for split in SPLITS if split == "train" or split in missing}
    for example in train:
        result[carved_split(example, seed, dev_fraction, test_fraction, missing)].append(example)
    if not result["train"]:
        raise carving_left_no_train(train[0].origin, missing, len(train), dev_fraction, test_fraction)
    for split in ("dev", "test"):
        if split not in missing and examples_by_split.get(split) is not None:
            result[split] = list(examples_by_split[split])
    return {split: result[split] for split in SPLITS if split in result}


def missing_splits(given, dev_fraction, test_fraction):
    """The held-out splits carved from train: those not in `given` (absent or None) whose fraction is > 0."""
    _check_fractions(dev_fraction, test_fraction)
    fractions = {"dev": dev_fraction, "test": test_fraction}
    return [split for split in ("dev", "test") if given.get(split) is None and fractions[split] > 0]


def carved_split(example, seed, dev_fraction, test_fraction, missing):
    """Where a training example goes when the splits `missing` are carved from train (`carve_splits`)."""
    if not missing:
        return "train"
    split = split_of(example.text, seed, dev_fraction, test_fraction, example.text_pair)
    return split if split in missing else "train"


def carving_left_no_train(first_origin, missing, count, dev_fraction, test_fraction):
    """The `DataError` of a train split that carving emptied (`first_origin`: its first example's)."""
    origin = first_origin.rsplit(":", 1)[0] if first_origin else "train"
    return DataError(
        f"{origin}: carving {' and '.join(missing)} out of train left no "
        f"training examples ({count} example(s), dev_fraction="
        f"{dev_fraction}, test_fraction={test_fraction}); provide more "
        f"training data or a dev/test file"
    )


def hashes_of(examples):
    """The `example_hash`es of `examples` as a numpy array of 16-byte items (dtype `V16`)."""
    return as_hash_array(b"".join(example_hash(ex.text, ex.text_pair) for ex in examples))


def as_hash_array(data):
    """16-byte hashes one after the other (bytes, a bytearray) as a numpy array of `V16` items."""
    return np.frombuffer(bytes(data), f"V{HASH_BYTES}")


def drop_held_out_from_train(task_splits):
    """Remove from every task's train split the texts that any task holds out.

    A text (a pair: both texts, `example_key`) in some task's dev or test
    split is taken out of the train split of every task, so that no model is
    scored on a text it trained on (`splits.leaks: drop`). Works in place.
    Held-out texts are compared by `example_hash` (16 bytes each).

    Args:
        task_splits: `{task: {split: [Example, ...]}}`.

    Returns:
        `{task: number of training examples removed}`.
    """
    held_out = {
        example_hash(ex.text, ex.text_pair)
        for splits in task_splits.values()
        for split in ("dev", "test")
        for ex in splits.get(split, ())
    }
    dropped = {}
    for task, splits in task_splits.items():
        train = splits.get("train", [])
        kept = [ex for ex in train if example_hash(ex.text, ex.text_pair) not in held_out]
        dropped[task] = len(train) - len(kept)
        splits["train"] = kept
    return dropped


def overlap_report(task_splits):
    """Count texts shared between tasks and texts leaking across splits.

    Texts are compared by `example_key`: a single text by `normalize_text`,
    a sentence pair by both of its normalized texts (a pair and a single
    text are never the same; "texts" below counts pairs for a pair task),
    through its 16-byte `example_hash`: the sets hold hashes, not texts.

    Args:
        task_splits: `{task: {split: [Example, ...]}}`.

    Returns:
        A JSON-able dict:
        - "texts": `{task: number of distinct normalized texts}`;
        - "shared": `{"a|b": n}` for each pair of tasks (in the given order),
          n the number of distinct normalized texts both tasks have, in any
          split;
        - "leaks": a list of `{"text_in": "a:test", "also_in": "b:train",
          "count": n}`, one for each dev/test split of a task and each task
          (the same task included) whose train split holds n > 0 of its
          texts;
        - "leaks_by_split": the same, one entry per split: `{"test":
          {"texts": n, "tasks": {"a": n_a, ...}}}`, n the number of distinct
          texts of that split (over all tasks) that some task trains on, and
          n_a those of task a. Splits without such texts are left out.
    """
    return overlap_of_hashes(
        {task: {split: hashes_of(examples) for split, examples in splits.items()} for task, splits in task_splits.items()}
    )


def overlap_of_hashes(hashes):
    """`overlap_report` of `{task: {split: example hashes}}` (`hashes_of`: numpy `V16` arrays, repeats allowed):
    what the streamed cold path gives, holding 16 bytes a training example instead of the examples."""
    texts = {task: {split: np.unique(h) for split, h in by_split.items()} for task, by_split in hashes.items()}
    empty = np.zeros([0], f"V{HASH_BYTES}")

    def union(arrays):
        arrays = list(arrays)
        return np.unique(np.concatenate(arrays)) if arrays else empty

    def common(a, b):
        return np.intersect1d(a, b, assume_unique=True).size

    all_texts = {task: union(by_split.values()) for task, by_split in texts.items()}
    shared = {f"{a}|{b}": common(all_texts[a], all_texts[b]) for a, b in itertools.combinations(texts, 2)}
    all_train = union(by_split["train"] for by_split in texts.values() if "train" in by_split)
    leaks_by_split = {}
    for split in ("dev", "test"):
        per_task = {
            task: common(by_split[split], all_train)
            for task, by_split in texts.items()
            if split in by_split
        }
        per_task = {task: n for task, n in per_task.items() if n}
        if per_task:
            found = union(texts[task][split] for task in per_task)
            leaks_by_split[split] = {"texts": common(found, all_train), "tasks": per_task}
    leaks = []
    for task, by_split in texts.items():
        for split in ("dev", "test"):
            if split not in by_split:
                continue
            for other, other_splits in texts.items():
                count = common(by_split[split], other_splits.get("train", empty))
                if count:
                    leaks.append(
                        {
                            "text_in": f"{task}:{split}",
                            "also_in": f"{other}:train",
                            "count": count,
                        }
                    )
    return {
        "texts": {task: int(found.size) for task, found in all_texts.items()},
        "shared": shared,
        "leaks": leaks,
        "leaks_by_split": leaks_by_split,
    }
