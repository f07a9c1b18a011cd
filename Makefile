# The README's two commands: `make demo` and `make test`. Each creates .venv if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo_data
DEMO_CONFIG ?= runs/action/classification/demo_r2plus1d_synthetic.hjson
WORKERS ?= 2

.PHONY: demo test test-slow install clean-demo

$(VENV)/.installed: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) tools/make_synthetic.py --out $(DEMO_DIR)/synthetic --workers $(WORKERS)
	$(PY) tools/convert_videos.py --dataset synthetic --annotations $(DEMO_DIR)/synthetic \
		--videos $(DEMO_DIR)/synthetic/videos --split train --out $(DEMO_DIR)/records \
		--short-side 56 --workers $(WORKERS)
	$(PY) tools/convert_videos.py --dataset synthetic --annotations $(DEMO_DIR)/synthetic \
		--videos $(DEMO_DIR)/synthetic/videos --split validation --out $(DEMO_DIR)/records \
		--short-side 56 --workers $(WORKERS)
	KF_DATA=$(DEMO_DIR)/records $(PY) runs/train.py $(DEMO_CONFIG) -r
	KF_DATA=$(DEMO_DIR)/records $(PY) runs/train.py $(DEMO_CONFIG) -e

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
