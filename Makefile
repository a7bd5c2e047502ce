# make demo: train ResNet50, DenseNet121 and SimpleCNN on the synthetic phantoms, compare their
#            metrics and their Grad-CAMs on test images, train a SimpleCNN on phantoms with a
#            burned-in marker, and measure all CAMs into one report
# make test: the test suite (what CI runs)
# make mutation: mutation score per core module (mutmut; an hour or more on 2 cores, not part of CI)
# Both create .venv with pip on first use. The demo uses 400 phantoms per class (1,600 images), so
# that training, the shortcut run and the evaluation fit in its 15-minute budget on 2 CPU cores.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= outputs/demo/$(shell date +%Y-%m-%d_%H-%M-%S)

.PHONY: demo test mutation

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev,dicom]" || { df -h . >&2; \
		echo "make: pip install failed; torch's Linux build with its CUDA libraries needs ~6 GB free here" >&2; exit 1; }
	touch $@

demo: $(VENV)/.installed
	$(PY) -m cxrcam.train -m experiment=demo model=resnet50,densenet121,simple_cnn data.synthetic.n_per_class=400 \
		hydra.sweep.dir=$(DEMO_DIR)
	$(PY) -m cxrcam.explain sweep=$(DEMO_DIR) split=test per_class=2 hydra.run.dir=$(DEMO_DIR)/explain
	$(PY) -m cxrcam.train experiment=shortcut hydra.run.dir=$(DEMO_DIR)/shortcut/confounded
	$(PY) -m cxrcam.evaluate sweep=$(DEMO_DIR) 'cam.method=[gradcam,hirescam]' \
		'cam.layer={resnet50:[layer4.2,layer3.5],simple_cnn:[features.3,features.2]}' \
		shortcut_ckpt=$(DEMO_DIR)/shortcut/confounded/checkpoints/best.pt \
		hydra.run.dir=$(DEMO_DIR)/evaluate
	@echo "demo outputs: $(DEMO_DIR) (metrics: comparison.md, Grad-CAM: explain/comparison.png," \
		"report: evaluate/report.html)"

test: $(VENV)/.installed
	$(PY) -m pytest -q

mutation: $(VENV)/.installed
	$(PY) scripts/mutation.py
