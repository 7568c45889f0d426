"""The embedded demo data: a small synthetic corpus generated on the fly.

`make demo` must run with no download, so the demo tasks read sentences that
this module generates from a tiny grammar, deterministically from a seed:

    the brilliant striker scored quickly near a local stadium .
    DET ADJ       NOUN    VERB   ADV     PREP DET ADJ  NOUN    PUNCT

Three kinds of labels come from the same generator:

* `topic` (classification, 4 classes): the topic of the nouns and verbs
  (sports, food, tech, weather); 15% of content words come from another topic.
* `sentiment` (classification, 2 classes): the polarity of the adjectives.
* `pos` (tagging): the part of speech of every word.

No sentence is in two splits, in any task: each split draws only sentences
from its own share of the sentence space (by a hash of the text, see
`split_of_text`), so the demo's dev and test scores are on unseen texts.

It is synthetic: it proves the path from YAML to SavedModel, not the quality
of a model. In YAML, `train`/`dev`/`test` give the number of examples:

    data: {format: demo, kind: topic, train: 800, dev: 150, test: 150}
"""

import hashlib
import random
from typing import Literal

import pydantic

from keras_mtl.data.example import Example
from keras_mtl.data.readers import ReaderOptions
from keras_mtl.data.readers import register_reader
from keras_mtl.errors import DataError

DETERMINERS = ["the", "a", "this", "every", "one"]
# topic -> (its nouns, its verbs)
TOPICS = {
    topic: (nouns.split(), verbs.split())
    for topic, nouns, verbs in [
        ("sports", "match team striker goal coach league referee stadium", "scored won trained defended kicked"),
        ("food", "soup chef pasta recipe bakery dessert kitchen salad", "cooked baked tasted served seasoned"),
        ("tech", "laptop server code robot chip network app database", "crashed compiled booted updated deployed"),
        ("weather", "storm rain forecast cloud breeze snow sunshine fog", "arrived cleared drifted fell lingered"),
    ]
}
ADJECTIVES = {
    "positive": ["brilliant", "lovely", "wonderful", "great", "superb", "delightful"],
    "negative": ["terrible", "awful", "dreadful", "poor", "boring", "miserable"],
    "neutral": ["new", "old", "small", "large", "local", "early"],
}
ADVERBS = ["quickly", "slowly", "again", "today", "finally", "suddenly"]
PREPOSITIONS = ["in", "near", "after", "before", "with"]


class DemoOptions(ReaderOptions):
    kind: Literal["topic", "sentiment", "pos"] = pydantic.Field(
        description="which labels to produce: topic, sentiment (classification) or pos (tagging)"
    )
    seed: int = pydantic.Field(0, description="generator seed (each split draws its own stream)")


def _sentence(rng, topic, polarity):
    """One sentence of the grammar as (words, tags)."""
    nouns, verbs = TOPICS[topic]
    other = [t for t in TOPICS if t != topic]

    def content(pool_index):
        t = rng.choice(other) if rng.random() < 0.15 else topic
        return rng.choice(TOPICS[t][pool_index])

    def adjective():
        if polarity != "neutral" and rng.random() < 0.8:
            return rng.choice(ADJECTIVES[polarity])
        return rng.choice(ADJECTIVES["neutral"])

    words, tags = [], []

    def add(word, tag):
        words.append(word)
        tags.append(tag)

    add(rng.choice(DETERMINERS), "DET")
    add(adjective(), "ADJ")
    add(content(0), "NOUN")
    add(content(1), "VERB")
    if rng.random() < 0.5:
        add(rng.choice(ADVERBS), "ADV")
    if rng.random() < 0.7:
        add(rng.choice(PREPOSITIONS), "PREP")
        add(rng.choice(DETERMINERS), "DET")
        if rng.random() < 0.6:
            add(adjective(), "ADJ")
        add(rng.choice(nouns), "NOUN")
    add(".", "PUNCT")
    return words, tags


# Which split a sentence may appear in: a fixed share of the sentence space
# each, by a hash of the text (the same in every kind and seed), so that no
# dev or test sentence of any demo task is a training sentence of any other.
SPLIT_SHARES = (("test", 0.15), ("dev", 0.15), ("train", 0.70))
_SPLIT_SALT = "keras-mtl demo split"


def split_of_text(text):
    """The only split ("train", "dev" or "test") in which the demo uses `text`."""
    from keras_mtl.data.splits import split_of

    return split_of(text, _SPLIT_SALT, dev_fraction=SPLIT_SHARES[1][1], test_fraction=SPLIT_SHARES[0][1])


def stream(kind, split, count, seed=0, task="__label__"):
    """`count` demo examples of one kind and split, one at a time (a generator),
    deterministic in all four; each example's label is keyed by `task`.

    Every sentence lies in the split's own share of the sentence space (see
    `split_of_text`): a sentence drawn for another split is drawn again, so
    the splits of all kinds and seeds never share a text. A split name other
    than train/dev/test draws from the train share.
    """
    digest = hashlib.sha256(f"{kind}/{split}/{seed}".encode()).hexdigest()
    rng = random.Random(int(digest[:16], 16))
    share = split if split in ("train", "dev", "test") else "train"
    for i in range(count):
        while True:
            topic = rng.choice(sorted(TOPICS))
            polarity = rng.choice(["positive", "negative"]) if kind == "sentiment" else rng.choice(
                ["positive", "negative", "neutral"]
            )
            words, tags = _sentence(rng, topic, polarity)
            if split_of_text(" ".join(words)) == share:
                break
        label = {"topic": topic, "sentiment": polarity, "pos": tuple(tags)}[kind]
        yield Example(" ".join(words), {task: label}, f"demo:{kind}/{split}:{i + 1}")


def generate(kind, split, count, seed=0):
    """The list of `stream(kind, split, count, seed)`: labels keyed by `"__label__"`."""
    return list(stream(kind, split, count, seed))


def _check_request(request):
    count = request.source
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise DataError(
            f"demo data: {request.split}: expected a number of examples (e.g. {request.split}: 200), "
            f"got {count!r}"
        )
    kind = request.options.kind
    wanted = "tagging" if kind == "pos" else "classification"
    if request.task_type != wanted:
        raise DataError(f"demo data: kind {kind!r} gives {wanted} labels, but task "
                        f"{request.task_name!r} is a {request.task_type} task")


@register_reader("demo", options=DemoOptions, task_types=("classification", "tagging"), source_is_path=False)
def read_demo(request):
    """The demo examples of one split, generated one at a time (a generator)."""
    _check_request(request)
    options = request.options
    yield from stream(options.kind, request.split, request.source, options.seed, task=request.task_name)
