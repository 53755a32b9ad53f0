# sam3-trt: two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
VARIANT ?= full
SEED ?= 0
CHECKPOINT ?=
ARTIFACTS ?= artifacts
OUT ?= $(ARTIFACTS)/$(VARIANT)
WEIGHTS := $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT),--random-weights --seed $(SEED))
PYTEST_ARGS ?=

GPU ?= auto
ENGINES ?= engines
STAGES ?= all
PRECISION ?= fp16
POLICY ?= default
FP16_OUT ?= $(OUT)-fp16
ONNX_DIR = $(if $(filter fp32,$(PRECISION)),$(OUT),$(FP16_OUT))
ENGINES_OUT ?= $(ENGINES)/$(VARIANT)$(if $(filter fp32,$(PRECISION)),-fp32,)
MODE ?= fp16-policy
IMAGES ?=
PROMPTS ?=
CAL_OUT ?= $(ARTIFACTS)/$(VARIANT)-$(MODE)
# `make bench` adds ONNX Runtime on the INT8 vision graph when `make calibrate MODE=int8` made this folder
INT8_OUT ?= $(ARTIFACTS)/$(VARIANT)-int8

.PHONY: install demo test lint export engines bench gpu-check calibrate offline-bundle clean help

help:
	@echo "make install   create ./.venv from requirements/lock.txt (pinned, CPU-only machine is fine)"
	@echo "make demo      install, export the tiny random-weight model (parity report), run the processor vs upstream"
	@echo "make test      install, lint, run the test suite (includes one full-size export)"
	@echo "make export    export VARIANT=full|tiny [CHECKPOINT=sam3.pt] to OUT=$(OUT)"
	@echo "make engines   GPU=5090|4090|3090|a100|h100|...|auto [VARIANT=tiny] [PRECISION=fp16|fp32] [POLICY=default|file.json]:"
	@echo "               export if needed, FP16 pass + estimate, build plan, engines in $(ENGINES)/<variant>/<target>/"
	@echo "make bench     full-size CPU benchmark (eager vs ONNX Runtime [+ INT8 vision after make calibrate MODE=int8]) -> benchmarks/results/"
	@echo "make calibrate MODE=fp16-policy|int8|fp8 [IMAGES=dir PROMPTS=file] [VARIANT=tiny] -> $(ARTIFACTS)/<variant>-<mode>/"
	@echo "make gpu-check [STAGES=a,b,c,d,e] staged GPU check: engines, parity, latency vs eager -> reports/gpu-check/ (needs a GPU)"
	@echo "make offline-bundle [BUNDLE_PYTHON=3.12 BUNDLE_OUT=dist/offline] wheels for a GPU machine without network"

install: $(VENV)/.installed

$(VENV)/.installed: requirements/lock.txt requirements/build.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements/build.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements/lock.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $@

demo: install
	$(BIN)/sam3-trt doctor
	$(BIN)/sam3-trt export --variant tiny --random-weights --seed $(SEED) --out $(ARTIFACTS)/demo --force
	$(BIN)/sam3-trt parity --artifacts $(ARTIFACTS)/demo --backend onnxruntime --json $(ARTIFACTS)/demo/parity.json
	$(BIN)/python -c "from sam3_trt.assets.images import demo_image; demo_image().save('$(ARTIFACTS)/demo/image.png')"
	$(BIN)/sam3-trt segment $(ARTIFACTS)/demo/image.png --prompt "red square" --prompt "blue disc" --box 380,170,560,360 \
		--artifacts $(ARTIFACTS)/demo --threshold 0.38 --output $(ARTIFACTS)/demo/segment.png --json $(ARTIFACTS)/demo/segment.json

test: install lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check sam3_trt tests benchmarks
	$(BIN)/ruff format --check sam3_trt tests benchmarks

export: install
	$(BIN)/sam3-trt export --variant $(VARIANT) $(WEIGHTS) --out $(OUT) --force

engines: install
	test -f $(OUT)/manifest.json || $(BIN)/sam3-trt export --variant $(VARIANT) $(WEIGHTS) --out $(OUT) --force
	test "$(PRECISION)" = fp32 || $(BIN)/sam3-trt fp16 --onnx-dir $(OUT) --out $(FP16_OUT) --policy $(POLICY) --reuse
	$(BIN)/sam3-trt build --gpu $(GPU) --onnx-dir $(ONNX_DIR) --out $(ENGINES_OUT) --force

bench: install
	test -f $(OUT)/manifest.json || $(BIN)/sam3-trt export --variant $(VARIANT) $(WEIGHTS) --out $(OUT) --force
	$(BIN)/python benchmarks/cpu_bench.py --artifacts $(OUT) --out benchmarks/results \
		$(if $(wildcard $(INT8_OUT)/manifest.json),--int8-artifacts $(INT8_OUT),)

calibrate: install
	test -f $(OUT)/manifest.json || $(BIN)/sam3-trt export --variant $(VARIANT) $(WEIGHTS) --out $(OUT) --force
	$(BIN)/sam3-trt calibrate --artifacts $(OUT) $(if $(IMAGES),--images $(IMAGES) --prompts $(PROMPTS),) \
		--mode $(MODE) --out $(CAL_OUT)

gpu-check: install
	$(BIN)/sam3-trt gpu-check --stages $(STAGES) --out reports/gpu-check

BUNDLE_PYTHON ?= 3.12
BUNDLE_OUT ?= dist/offline
offline-bundle: install
	$(BIN)/sam3-trt bundle --out $(BUNDLE_OUT) --python $(BUNDLE_PYTHON) --force

clean:
	rm -rf $(ARTIFACTS) $(ENGINES) .pytest_cache .ruff_cache
