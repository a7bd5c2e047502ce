# make demo: train ResNet50, DenseNet121 and SimpleCNN on the synthetic phantoms, compare their
#            metrics and their Grad-CAMs on test images
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
	$(PY) -m cxrcam.explain sweep=$(DEMO_DIR) split=test per_class=2 hydra.run.dir=$(DEMO_DIR)/explain
	@echo "demo outputs: $(DEMO_DIR) (metrics: comparison.md, Grad-CAM: explain/comparison.png)"

test: $(VENV)/.installed
	$(PY) -m pytest -q
