# Quick start:  make run   (set up, create demo data, start the dashboard)
#               make test  (set up, run the whole test suite, browser tests included)
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PORT   ?= 8501

.PHONY: run test install browser cxx demo-data demo-models mlflow-ui bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

demo-data: install
	test -f data/demo.h5 || $(PY) -m genesis simulate --events 3000 --seed 0 --out data/demo.h5

# The demo checkpoints shipped in genesis/resources/demo (Sample and Inpaint work on a fresh clone):
# tiny.yaml and flow_tiny.yaml, 2000 steps of 64 simulated events each, ~15-20 minutes on 2 idle cores.
demo-models: install
	$(PY) -m genesis demo-models

run: install demo-data
	$(PY) -m streamlit run app.py --server.port $(PORT) --browser.gatherUsageStats false

# Debian's chromium for the browser tests (nothing to do when it is already there). Installing needs root;
# any failure stops make with the reason (CI runs the browser test, it must never be skipped silently).
browser:
	@if test -x /usr/bin/chromium; then exit 0; fi; \
	if test "$$(id -u)" != 0; then \
	  echo "error: /usr/bin/chromium is missing and installing it needs root: sudo apt-get install chromium" >&2; exit 1; fi; \
	apt-get update -qq || { echo "error: apt-get update failed: cannot install chromium for the browser tests" >&2; exit 1; }; \
	apt-get install -y -qq chromium >/dev/null || { echo "error: apt-get install chromium failed" >&2; exit 1; }; \
	test -x /usr/bin/chromium || { echo "error: chromium installed but /usr/bin/chromium is missing" >&2; exit 1; }

# A C++ compiler for torch.compile on a CPU (`genesis sample --compile` and its test), installed like chromium.
cxx:
	@if command -v g++ >/dev/null || command -v c++ >/dev/null; then exit 0; fi; \
	if test "$$(id -u)" != 0; then echo "error: no C++ compiler and installing one needs root: sudo apt-get install g++" >&2; exit 1; fi; \
	apt-get update -qq && apt-get install -y -qq g++ >/dev/null || { echo "error: apt-get install g++ failed" >&2; exit 1; }

test: install browser cxx
	$(PY) -m pytest -q

# prints http://127.0.0.1:5000/#/experiments/<id>/runs?workflowType=machine_learning: our runs, not GenAI traces
mlflow-ui: install
	$(PY) -m genesis ui --port 5000

bench: install
	$(PY) bench/simulator.py
	$(PY) bench/loader.py

clean:
	rm -rf $(VENV) .pytest_cache
