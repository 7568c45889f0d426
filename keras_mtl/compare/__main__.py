"""`python -m keras_mtl.compare CONFIG ...`: the same as `keras-mtl compare CONFIG ...`."""

import sys

from keras_mtl.cli import main

sys.exit(main(["compare", *sys.argv[1:]]))
