"""Meta-learning: Reptile meta-training (`reptile`) and few-shot adaptation
to a new task (`adapt`). docs/meta_learning.md.

    keras-mtl meta-train configs/meta_polarity.yaml --workdir runs/meta
    keras-mtl adapt runs/meta configs/adapt_subjectivity.yaml --shots 16 --seed 0
"""
