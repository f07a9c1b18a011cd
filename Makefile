# The README's two commands: `make demo` and `make test`. Each creates .venv if missing;
# then `source .venv/bin/activate` puts the kf-* commands on PATH.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo_data
DEMO_CONFIG ?= runs/action/classification/demo_r2plus1d_synthetic.hjson
WORKERS ?= 2

.PHONY: demo test test-slow install clean-demo

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# make demo: the package alone (TensorFlow, PyAV, OpenCV, ...); the demo's
# steps import nothing of the test extra (tests/test_make_demo.py).
$(VENV)/.installed-demo: setup.py | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

# make test: the package with the test extra (pytest, torch, jax, apache-beam, ...).
$(VENV)/.installed: setup.py | $(PY)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed-demo
	$(PY) tools/make_synthetic.py --out $(DEMO_DIR)/synthetic --workers $(WORKERS)
	$(PY) tools/convert_videos.py --dataset synthetic --annotations $(DEMO_DIR)/synthetic \
		--videos $(DEMO_DIR)/synthetic/videos --split train --out $(DEMO_DIR)/records \
		--short-side 56 --workers $(WORKERS)
	$(PY) tools/convert_videos.py --dataset synthetic --annotations $(DEMO_DIR)/synthetic \
		--videos $(DEMO_DIR)/synthetic/videos --split validation --out $(DEMO_DIR)/records \
		--short-side 56 --workers $(WORKERS)
	KF_DATA=$(DEMO_DIR) $(PY) runs/train.py $(DEMO_CONFIG) -r
	KF_DATA=$(DEMO_DIR) $(PY) runs/train.py $(DEMO_CONFIG) -e

test: $(VENV)/.installed
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q

# One pytest process per file: in one process the in-process dry runs and
# docs blocks keep memory between tests and reach the OOM killer on 23 GB.
test-slow: $(VENV)/.installed
	@status=0; for f in $$(grep -rl --include='test_*.py' 'mark.slow' tests | sort); do \
	  echo "== $$f"; TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q -m slow $$f; rc=$$?; \
	  [ $$rc -eq 0 ] || [ $$rc -eq 5 ] || status=1; \
	done; exit $$status

clean-demo:
	rm -rf $(DEMO_DIR) experiments/demo_r2plus1d_synthetic
