# pwm: set-up, tests, data and the demo. `make demo`, `make test` and `make test-jazzy` work from a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# ROS 2 Jazzy (the LTS) beside the Kilted of .venv: its own venv, as one venv holds one distribution's wheels.
JAZZY_VENV ?= .venv-jazzy
JAZZY_PY := $(JAZZY_VENV)/bin/python
JAZZY_STAMP := $(JAZZY_VENV)/.installed
# The test files that talk ROS 2 (rclpy, the node, the replay, message conversions, bags of ROS messages).
ROS_TESTS := test/test_ros_node.py test/test_ros_params.py test/test_ros_replay.py test/test_ros_worker.py \
             test/test_conversions.py test/test_eval_bag.py test/test_demo.py test/test_launch.py \
             test/test_ros_bad_inputs.py test/test_camera_gaps.py test/test_cyclone_interop.py test/test_ros_sim.py

export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export RMW_IMPLEMENTATION ?= rmw_fastrtps_cpp
export PYTHONUNBUFFERED := 1

.PHONY: venv venv-jazzy test test-jazzy lint data demo bench clean help

help:
	@echo "make venv   create .venv with everything (idempotent)"
	@echo "make test   ruff + the test suite"
	@echo "make test-jazzy  the ROS 2 tests again, on ROS 2 Jazzy (creates .venv-jazzy)"
	@echo "make data   write out/sample_drive (one 30 s synthetic drive, seed 0)"
	@echo "make demo   replay the sample drive through the ROS 2 node and write out/demo/report.html"

# $(call install_venv,VENV,EXTRAS): create VENV if missing, install the project with EXTRAS, stamp it.
comma := ,
define install_venv
	@test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(1)/bin/python -m pip install -q --disable-pip-version-check -e '.[$(2)]'
	@touch $(1)/.installed
endef

venv: $(STAMP)

$(STAMP): setup.py setup.cfg package.xml
	$(call install_venv,$(VENV),train$(comma)ros$(comma)dev)

venv-jazzy: $(JAZZY_STAMP)

$(JAZZY_STAMP): setup.py setup.cfg package.xml
	$(call install_venv,$(JAZZY_VENV),train$(comma)ros-jazzy$(comma)dev)

lint: venv
	$(PY) -m ruff check .

test: venv lint
	$(PY) -m pytest -q

test-jazzy: venv-jazzy
	$(JAZZY_PY) -m pytest -q $(ROS_TESTS)

data: venv
	$(VENV)/bin/pwm gen-data --out out/sample_drive --scenes 1 --seconds 30 --seed 0

# The sample drive (written if missing), the shipped model exported to ONNX (if missing or changed), pwm_node fed
# live by pwm_replay, then out/demo/report.html + metrics.json. Options: make demo DEMO_ARGS="--rate 2".
demo: venv
	$(VENV)/bin/pwm demo $(DEMO_ARGS)

clean:
	rm -rf out build install log .pytest_cache .ruff_cache
