"""`python -m keras_mtl.cli ...`: the same as `keras-mtl ...`."""

import sys

from keras_mtl.cli import main

sys.exit(main())
