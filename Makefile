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
# VIDEO=1: the export (and so the FP16 pass and the engines) also holds the video tracker's graphs
VIDEO ?=
EXPORT_ARGS := --variant $(VARIANT) $(WEIGHTS)$(if $(VIDEO), --video,)
PYTEST_ARGS ?=
# serving (PyTriton) needs numpy<2 and a Python with a shared libpython (Triton embeds it): its own venv
SERVE_PYTHON ?= $(PYTHON)
SERVE_VENV ?= .venv-serve
SERVE_BIN := $(SERVE_VENV)/bin
CLIENTS ?= 1,4,16
REQUESTS ?= 2
SOAK_ROUNDS ?= 3
SOAK_CLIENTS ?= 8
SERVE_VARIANT ?= tiny

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

.PHONY: install serve-install serve serve-load demo test test-quick test-full lint docs export engines bench gpu-check calibrate offline-bundle clean help

help:
	@echo "make install   create ./.venv from requirements/lock.txt (pinned, CPU-only machine is fine)"
	@echo "make demo      install, export the tiny random-weight model (parity report), run the processor vs upstream"
	@echo "make test      install, lint, docs, the test suite CI runs (tiny model + full-size tracker graphs; times: docs/results/)"
	@echo "make test-quick     the tests that need no export (edit-test loop; times: docs/results/)"
	@echo "make test-full the full-size tests (export with parity, processor vs upstream, RTX and FP16 engines)"
	@echo "make lint      ruff, ruff format, the cross-stage private-import check"
	@echo "make docs      mkdocs build --strict into build/site (command reference generated from the CLI)"
	@echo "make serve-install  ./.venv-serve for serving (PyTriton + tritonclient, torch-free; SERVE_PYTHON=$(SERVE_PYTHON))"
	@echo "make serve     serve ARTIFACTS dir on Triton (PyTriton): make serve OUT=artifacts/demo"
	@echo "make serve-load     load test on loopback (CLIENTS=$(CLIENTS) x REQUESTS=$(REQUESTS), then SOAK_ROUNDS=$(SOAK_ROUNDS) at SOAK_CLIENTS=$(SOAK_CLIENTS)) of the tiny export [SERVE_VARIANT=full: artifacts/full] -> benchmarks/results/"
	@echo "make export    export VARIANT=full|tiny [CHECKPOINT=sam3.pt] [VIDEO=1: tracker graphs too] to OUT=$(OUT)"
	@echo "make engines   GPU=5090|4090|3090|a100|h100|...|auto [VARIANT=tiny] [PRECISION=fp16|fp32] [POLICY=default|file.json] [VIDEO=1]:"
	@echo "               export if needed, FP16 pass + estimate, build plan, engines in $(ENGINES)/<variant>/<target>/"
	@echo "make bench     full-size CPU benchmark (eager vs ONNX Runtime [+ INT8 vision after make calibrate MODE=int8]) -> benchmarks/results/"
	@echo "make calibrate MODE=fp16-policy|int8|fp8 [IMAGES=dir PROMPTS=file] [VARIANT=tiny] -> $(ARTIFACTS)/<variant>-<mode>/"
	@echo "make gpu-check [STAGES=a,b,c,d,e] staged GPU check: engines, parity, latency vs eager -> reports/gpu-check/ (needs a GPU)"
	@echo "make offline-bundle [BUNDLE_PYTHON=3.12 BUNDLE_OUT=dist/offline] wheels for a GPU machine without network"

install: $(VENV)/.installed

$(VENV)/.installed: requirements/lock.txt requirements/test-sdist.txt requirements/test-clients.txt requirements/build.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements/build.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements/lock.txt
	SAM2_BUILD_CUDA=0 $(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -r requirements/test-sdist.txt
	$(BIN)/python -m pip install --quiet --no-deps --upgrade --target $(VENV)/test-clients -r requirements/test-clients.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $@

serve-install: $(SERVE_VENV)/.installed

$(SERVE_VENV)/.installed: requirements/serve-lock.txt requirements/build.txt pyproject.toml
	@$(SERVE_PYTHON) -c "import sysconfig, sys; sys.exit(0 if sysconfig.get_config_var('Py_ENABLE_SHARED') else 1)" || \
		{ echo "error: SERVE_PYTHON=$(SERVE_PYTHON) is missing or has no shared libpython, which Triton's Python backend embeds; pass SERVE_PYTHON=/path/to/python3 of your distribution (Debian/Ubuntu: /usr/bin/python3.11)" >&2; exit 2; }
	test -x $(SERVE_BIN)/python || $(SERVE_PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_BIN)/python -m pip install --quiet -r requirements/build.txt
	$(SERVE_BIN)/python -m pip install --quiet --no-deps -r requirements/serve-lock.txt
	$(SERVE_BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(SERVE_BIN)/python -m pip check
	touch $@

serve: serve-install
	$(SERVE_BIN)/sam3-trt serve --artifacts $(OUT)

serve-load: install serve-install
	test -f $(ARTIFACTS)/demo/manifest.json || \
		$(BIN)/sam3-trt export --variant tiny --random-weights --seed $(SEED) --out $(ARTIFACTS)/demo --force
	$(SERVE_BIN)/python benchmarks/serve_load.py --artifacts $(if $(filter full,$(SERVE_VARIANT)),$(ARTIFACTS)/full,$(ARTIFACTS)/demo) \
		--clients $(CLIENTS) --requests $(REQUESTS) --soak-rounds $(SOAK_ROUNDS) --soak-clients $(SOAK_CLIENTS) \
		--out benchmarks/results

demo: install
	$(BIN)/sam3-trt doctor
	$(BIN)/sam3-trt export --variant tiny --random-weights --seed $(SEED) --out $(ARTIFACTS)/demo --force
	$(BIN)/sam3-trt parity --artifacts $(ARTIFACTS)/demo --backend onnxruntime --json $(ARTIFACTS)/demo/parity.json
	$(BIN)/python -c "from sam3_trt.assets.images import demo_image; demo_image().save('$(ARTIFACTS)/demo/image.png')"
	$(BIN)/sam3-trt segment $(ARTIFACTS)/demo/image.png --prompt "red square" --prompt "blue disc" --box 380,170,560,360 \
		--artifacts $(ARTIFACTS)/demo --threshold 0.38 --output $(ARTIFACTS)/demo/segment.png --json $(ARTIFACTS)/demo/segment.json

test: install serve-install lint docs
	SAM3TRT_SERVE_PYTHON=$(SERVE_BIN)/python $(BIN)/python -m pytest $(PYTEST_ARGS)

# the edit-test loop: every test that needs no export (no session export fixture, no export of its own)
test-quick: install lint
	$(BIN)/python -m pytest -m "not export and not fullsize" $(PYTEST_ARGS)

# the full-size model (random weights): export with every check, processor vs upstream, RTX engines, FP16 pass;
# and the tiny-model cases too slow for make test's budget (marker slow)
test-full: install lint
	SAM3TRT_FULLSIZE=1 SAM3TRT_FULL_FP16=1 $(BIN)/python -m pytest -m "fullsize or slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check sam3_trt tests benchmarks tools
	$(BIN)/ruff format --check sam3_trt tests benchmarks tools
	$(BIN)/python tools/check_private_imports.py sam3_trt

docs: install
	$(BIN)/mkdocs build --strict --quiet --site-dir build/site

export: install
	$(BIN)/sam3-trt export $(EXPORT_ARGS) --out $(OUT) --force

engines: install
	test -f $(OUT)/manifest.json || $(BIN)/sam3-trt export $(EXPORT_ARGS) --out $(OUT) --force
	$(if $(VIDEO),@grep -q '"video"' $(OUT)/manifest.json || { echo "error: VIDEO=1 but $(OUT) was exported without --video: run make export VIDEO=1 VARIANT=$(VARIANT) first" >&2; exit 2; },)
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
