# pwm: set-up, tests, data and the demo. `make demo` and `make test` work from a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export RMW_IMPLEMENTATION ?= rmw_fastrtps_cpp
export PYTHONUNBUFFERED := 1

.PHONY: venv test lint data demo bench clean help

help:
	@echo "make venv   create .venv with everything (idempotent)"
	@echo "make test   ruff + the test suite"
	@echo "make data   write out/sample_drive (one 30 s synthetic drive, seed 0)"
	@echo "make demo   replay the sample drive through the ROS 2 node and write out/demo/report.html"

venv: $(STAMP)

$(STAMP): setup.py setup.cfg package.xml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[train,ros,dev]'
	@touch $(STAMP)

lint: venv
	$(PY) -m ruff check .

test: venv lint
	$(PY) -m pytest -q

data: venv
	$(VENV)/bin/pwm gen-data --out out/sample_drive --scenes 1 --seconds 30 --seed 0

# The sample drive (written if missing), the shipped model exported to ONNX (if missing or changed), pwm_node fed
# live by pwm_replay, then out/demo/report.html + metrics.json. Options: make demo DEMO_ARGS="--rate 2".
demo: venv
	$(VENV)/bin/pwm demo $(DEMO_ARGS)

clean:
	rm -rf out build install log .pytest_cache .ruff_cache
