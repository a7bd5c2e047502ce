# make demo: train ResNet50, DenseNet121 and SimpleCNN on the synthetic phantoms and compare them
# make test: the test suite (what CI runs)
# Both create .venv with pip on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= outputs/demo/$(shell date +%Y-%m-%d_%H-%M-%S)

.PHONY: demo test

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(PY) -m cxrcam.train -m experiment=demo model=resnet50,densenet121,simple_cnn hydra.sweep.dir=$(DEMO_DIR)
	@echo "demo outputs: $(DEMO_DIR) (model comparison: $(DEMO_DIR)/comparison.md)"

test: $(VENV)/.installed
	$(PY) -m pytest -q
