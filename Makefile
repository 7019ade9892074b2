# The two commands of the README: `make demo` and `make test`. Both create
# .venv when it is missing and install the pinned requirements first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?=
# Training epochs of the demo; empty means the reference 20.
EPOCHS ?=

.PHONY: demo test bench venv clean chromium

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py $(if $(DATA),--data $(DATA),) $(if $(EPOCHS),--epochs $(EPOCHS),)

# The browser test of the anomalies page drives Debian's chromium headless.
chromium:
	command -v chromium || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

test: $(STAMP) chromium
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf lake airflow_home var
