# edge-face: the two commands a newcomer needs are `make demo` and `make test`.
# Everything they need is installed by the targets below (Python packages into .venv and
# .venv-tflite; mosquitto and the systemd tools through apt where missing).

PYTHON ?= python3
VENV := .venv
VENV_TFLITE := .venv-tflite
BIN := $(VENV)/bin
UPSTREAM ?= $(abspath ../shared/upstream)
export EDGE_FACE_UPSTREAM_DIR ?= $(UPSTREAM)
MODEL := models/build/version-slim-320-int8.tflite
# The models that ship inside the package, one per input profile (package data of edge.models,
# see edge/models/__init__.py: [detector] input chooses one).
SHIPPED_MODEL_VARIANTS := slim-320 slim-320-160x120 slim-320-256x192
SHIPPED_MODEL_DIR := edge/models
PYTEST_ARGS ?=

.PHONY: demo test setup setup-tflite system-deps model samples bench evaluate arm64-check fleet-check clean
.PHONY: wheel shipped-model shipped-model-check recognition-models

## demo: set up, build the int8 model, and run the main job (the daemon) on sample photos
demo: setup model samples
	$(BIN)/edge-face run --config examples/demo.toml

## test: set up everything (both interpreter environments, mosquitto, systemd tools), check the
## shipped models against a rebuild, run the whole suite, the detector and recognition tests
## again under tflite-runtime, then the roots: aarch64 (per Pi CPU, bookworm and trixie), a real
## Home Assistant, and the fleet of booted hosts (each cached after its first run); lint and
## types (ruff, mypy) first
test: setup setup-tflite system-deps model
	$(MAKE) lint
	$(MAKE) shipped-model-check
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	EDGE_FACE_INTERPRETER=tflite_runtime $(VENV_TFLITE)/bin/python -m pytest -p no:cacheprovider \
		tests/test_decode.py tests/test_preprocess.py tests/test_detector.py tests/test_recognize.py $(PYTEST_ARGS)
	$(MAKE) arm64-check
	$(MAKE) ha-check
	$(MAKE) fleet-check

setup: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[tools,test]'
	touch $@

# tflite-runtime 2.14 is built against numpy 1.x: it gets its own environment, with only the
# device dependencies, so the detector tests also run on the interpreter older Pis use.
setup-tflite: $(VENV_TFLITE)/.installed
$(VENV_TFLITE)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_TFLITE)
	$(VENV_TFLITE)/bin/pip install --quiet --upgrade pip
	$(VENV_TFLITE)/bin/pip install --quiet 'numpy<2' 'tflite-runtime==2.14.0' 'pillow>=9.4' 'paho-mqtt>=2.0,<3' 'pytest>=8'
	$(VENV_TFLITE)/bin/pip install --quiet --no-deps -e .
	touch $@

# python3-numpy: the installer tests make their virtualenvs from the OS Python with its site
# packages, as on Raspberry Pi OS, where numpy comes with the OS (python3-picamera2 needs it).
system-deps:
	@for tool in mosquitto mosquitto_sub systemd-analyze openssl shellcheck; do \
		command -v $$tool >/dev/null 2>&1 || missing=1; done; \
	/usr/bin/python3 -c 'import numpy' 2>/dev/null || missing=1; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq mosquitto mosquitto-clients systemd openssl shellcheck python3-numpy >/dev/null; fi

model: setup $(MODEL)
$(MODEL):
	$(BIN)/python -m tools.quantize --model slim-320

samples: setup
	$(BIN)/python -m tools.weights --samples --dest models/cache/samples

bench: setup model
	$(BIN)/python -m tools.bench

evaluate: setup model
	$(BIN)/python -m tools.evaluate

## wheel: the device wheel into dist/ (the int8 model inside, no tools/test extras); needs no
## network where $(PYTHON) has setuptools >= 61 (Debian bookworm's python3-setuptools has 66)
wheel:
	tools/build_wheel.sh --python $(PYTHON) --out dist

## shipped-model: rebuild the int8 models that ship in the package, and their sidecars, from the
## pinned upstream weights (run it after a change to tools/quantize.py or the sidecar format)
shipped-model: setup
	for variant in $(SHIPPED_MODEL_VARIANTS); do \
		$(BIN)/python -m tools.quantize --model $$variant --out $(SHIPPED_MODEL_DIR) || exit 1; done

## recognition-models: rebuild the face-recognition models shipped in edge/recognize/models
## (5-point landmarks .npz, descriptor network .tflite, their sidecars) from the pinned wheel of
## dlib's models (run it after a change to tools/recognize_build or the sidecar format)
RECOGNITION_MODEL_DIR := edge/recognize/models
RECOGNITION_MODEL_FILES := shape-predictor-5.npz shape-predictor-5.json dlib-resnet-v1-int8-float16.tflite dlib-resnet-v1-int8-float16.json
recognition-models: setup
	$(BIN)/python -m tools.recognize_build --out $(RECOGNITION_MODEL_DIR)

## shipped-model-check: rebuild every shipped model (the detector's input profiles, the
## recognition models) into a scratch folder; every file must be byte-identical to the committed
## one (the builds are deterministic with the pinned TensorFlow)
shipped-model-check: setup
	@scratch=$$(mktemp -d) && trap 'rm -rf "$$scratch"' EXIT && \
	for variant in $(SHIPPED_MODEL_VARIANTS); do \
		$(BIN)/python -m tools.quantize --model $$variant --out "$$scratch" >"$$scratch/log" 2>&1 \
			|| { cat "$$scratch/log"; exit 1; }; \
		for name in version-$$variant-int8.tflite version-$$variant-int8.json; do \
			cmp -- "$$scratch/$$name" $(SHIPPED_MODEL_DIR)/$$name || { echo "$(SHIPPED_MODEL_DIR)/$$name is not what the pinned weights build (make shipped-model rewrites it)" >&2; exit 1; }; \
		done; \
	done && echo "$(SHIPPED_MODEL_DIR): the shipped models ($(SHIPPED_MODEL_VARIANTS)) are byte-identical to a rebuild from the pinned weights" && \
	$(BIN)/python -m tools.recognize_build --out "$$scratch/recognize" >"$$scratch/log" 2>&1 \
		|| { cat "$$scratch/log"; exit 1; } && \
	for name in $(RECOGNITION_MODEL_FILES); do \
		cmp -- "$$scratch/recognize/$$name" $(RECOGNITION_MODEL_DIR)/$$name || { echo "$(RECOGNITION_MODEL_DIR)/$$name is not what the pinned wheel builds (make recognition-models rewrites it)" >&2; exit 1; }; \
	done && echo "$(RECOGNITION_MODEL_DIR): the shipped recognition models are byte-identical to a rebuild from the pinned wheel"

## arm64-check: the device package on an emulated Debian bookworm arm64 userland (needs root;
## first run ~13 min, then cached in $$EDGE_FACE_ARM64_CACHE or ~/.cache/edge-face/arm64)
arm64-check: model
	tools/arm64_check.sh

## arm-cost: aarch64 instructions per stage on the Pis' CPU models (instruction counts, not
## time); builds qemu with TCG plugins on first use (root), cached beside the arm64 roots
.PHONY: arm-cost arm-cost-per-op arm-cost-race arm-cost-stems arm-cost-recognize
arm-cost: arm64-check
	$(BIN)/python -m tools.arm_cost

## arm-cost-per-op: where the int8 and float invokes' instructions go, op by op
arm-cost-per-op: arm64-check
	$(BIN)/python -m tools.arm_cost --per-op

## arm-cost-race: a whole frame of every shipped profile against MediaPipe's BlazeFace short- and
## full-range on each Pi CPU, at 1, 2 and 4 interpreter threads (the BlazeFace files come from the
## pinned mediapipe wheel through pip, into models/cache/blazeface; never shipped)
arm-cost-race: arm64-check
	$(BIN)/python -m tools.arm_cost --race --threads 1,2,4

## arm-cost-stems: the first convolution done each other way (per-tensor weights, 4-channel input,
## space-to-depth, float stem), pre-process and invoke, against the shipped model on each Pi CPU
arm-cost-stems: arm64-check
	$(BIN)/python -m tools.arm_cost --stems

## arm-cost-recognize: one face's recognition (landmarks, chip, descriptor) on each Pi CPU against
## the 320x240 detector invoke in the same run; target: under 10 invokes on every CPU
arm-cost-recognize: arm64-check
	$(BIN)/python -m tools.arm_cost --recognize

## ha-check: edge-face against a real Home Assistant core in a Debian trixie root (needs root;
## first run builds the root in a few minutes, then cached in $$EDGE_FACE_HA_CACHE or
## ~/.cache/edge-face/ha and run offline)
.PHONY: ha-check
ha-check: setup system-deps model
	EDGE_FACE_HOST_PYTHON=$(abspath $(BIN)/python) tools/ha_check.sh

## lint: ruff (lint and format) on the Python trees, mypy strict on the device package and
## checked on the offline tools
.PHONY: lint test-fast
LINT_PATHS := edge tools tests
lint: setup
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy --strict edge
	$(BIN)/mypy tools

## test-fast: the unit tests only (pure code, no broker, no subprocess, no model build): seconds
test-fast: setup
	$(BIN)/python -m pytest -q -m "unit and not integration and not slow and not faults" $(PYTEST_ARGS)

## fleet-check: the Ansible role rolled out over SSH to six Debian bookworm hosts booted with
## systemd (systemd-nspawn, own network namespaces; needs root). The first run builds a cached
## root in $$EDGE_FACE_FLEET_CACHE or ~/.cache/edge-face/fleet. Scenarios: tests/test_fleet_bench.py
fleet-check: setup model system-deps
	EDGE_FACE_FLEET_CAMERA=$(UPSTREAM)/images EDGE_FACE_HOST_PYTHON=$(abspath $(BIN))/python \
		tools/fleet/bench.sh run 6 -- $(BIN)/python -m pytest -x -p no:cacheprovider tests/test_fleet_bench.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(VENV_TFLITE) models/build models/cache out
