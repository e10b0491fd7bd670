# One entry point for set-up, tests, the GPU day and the demo. Everything the project needs is
# installed into .venv from the project's own files; stamps under .venv make a second run with
# nothing changed skip every heavy step. Sections: set-up, the loop (check/test), the floor
# stack, the GPU machine, jobs.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
BUILD := build

# torch and torchvision are pinned as a matched pair (torchvision's C++ ops are built
# against one torch release). torch from PyPI is the CUDA build; it runs on CPU-only machines.
TORCH_SPEC := torch==2.14.1 torchvision==0.29.2

RUST_SRCS := Cargo.toml $(wildcard Cargo.lock) $(shell find matcher_rs -name '*.rs' -o -name Cargo.toml | grep -v /target/ | grep -v /fuzz/)
CSRC_ALL := $(shell find msda_ops/src/msda_ops/csrc -type f)
PY_PACKAGES := msda_ops/src/msda_ops zoo matcher_rs
PY_LINT_PATHS := $(PY_PACKAGES) tests benchmarks

.PHONY: help setup check test pytest test-fast test-slow rust-check clippy py-lint typecheck \
	cuda-check test-cuda-emu test-cuda-emu-tsan test-cuda-emu-mutants test-floor \
	test-gpu gpu-install gpu-pytest gpu-sanitize wheel gpu-bundle gpu-anchors gpu-day \
	gpu-day-dry-run demo demo-engines demo-model bench bench-convergence clean FORCE

help:
	@echo "make demo      the main job (offline)"
	@echo "make demo-model  re-train the bundled demo model (CPU: about an hour)"
	@echo "make demo-engines  the op kernel vs its reference, matcher_rs vs scipy"
	@echo "make check     the one-minute loop: ruff, mypy, clippy, the fast tests"
	@echo "make test      the whole CPU test suite (sets up .venv on first use)"
	@echo "make test-floor  the op, Triton and model tests on the GPU machine's versions (torch 2.11)"
	@echo "make test-slow long CPU tests (training until a tiny model learns)"
	@echo "make test-gpu  the CUDA tests (on a machine with a GPU)"
	@echo "make gpu-day-dry-run  rehearse the GPU day (benchmarks/gpu_day.py): plan, steps"
	@echo "make bench     CPU benchmarks; results as JSON in benchmarks/results/"
	@echo "make bench-convergence  the papers' claims on multi-size shapes: DETR vs Deformable DETR, ablations (several CPU hours per seed; finished runs are skipped)"

# ================================================================ set-up
# A stamp whose content is every input of the venv that is not a file (the interpreter, the
# pinned torch): rewritten only when it changes, so that changing TORCH_SPEC re-installs.
$(VENV)/.inputs: FORCE
	@mkdir -p $(@D)
	@want="$(PYTHON) $(TORCH_SPEC)"; [ "$$(cat $@ 2>/dev/null)" = "$$want" ] || echo "$$want" > $@

$(VENV)/.deps: pyproject.toml msda_ops/pyproject.toml $(VENV)/.inputs
	@echo "==> setting up $(VENV) (first run downloads torch: a few minutes)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install "setuptools>=77" wheel "maturin>=1.9,<2"
	$(PIP) install $(TORCH_SPEC)
	$(PIP) install --no-build-isolation -e ./msda_ops
	$(PIP) install --no-build-isolation -e ".[test,dev,bench]"
	@touch $@

# The Rust extension is rebuilt (incrementally, in target/) when a Rust source changes.
$(VENV)/.ext: $(VENV)/.deps $(RUST_SRCS)
	$(PIP) install --no-build-isolation --no-deps -e .
	@touch $@

setup: $(VENV)/.deps $(VENV)/.ext

# nvcc and the CUDA headers from PyPI, at the exact CUDA release torch was built with (mixed
# releases fail); the link step wants libcudart.so beside the shipped .so.13. Downloaded once:
# an installed release is not fetched again. Offline with nothing installed, the stamp is not
# written and cuda-check says so in one line instead of failing.
$(VENV)/.nvcc: $(VENV)/.deps
	@version=$$($(PY) -c 'import importlib.metadata as m; print(m.version("cuda-toolkit"))'); \
	if $(PIP) install --retries 1 --timeout 20 "cuda-toolkit[nvcc,cccl]==$$version"; then \
		$(PY) -m msda_ops.cuda_toolkit --link-cudart && touch $@; \
	else echo "==> CUDA toolkit $$version: not installed and not downloadable (offline?)"; fi

# ================================================================ the loop
# make check: the one-minute loop. make test: everything CPU, the slowest tests listed.
# FAST_TESTS: unit tests whose calls take ~8 s in all (pytest --durations picked them; the
# scipy comparisons and image transforms, ~15 s more, stay in `make test`).
FAST_TESTS := tests/test_bench_harness.py tests/test_makefile.py tests/test_sanitizer_log.py \
	tests/test_msda_reference.py tests/test_msda_checks.py tests/test_matcher_rs_faults.py \
	tests/test_train_args.py tests/test_zoo_criterion.py

check: setup
	$(MAKE) --no-print-directory py-lint typecheck clippy test-fast

test-fast: setup
	$(PY) -m pytest -q -p no:cacheprovider -m "not gpu and not slow" $(FAST_TESTS)

test: setup
	$(MAKE) --no-print-directory rust-check
	$(MAKE) --no-print-directory py-lint
	$(MAKE) --no-print-directory typecheck
	$(MAKE) --no-print-directory cuda-check
	$(MAKE) --no-print-directory test-cuda-emu
	$(MAKE) --no-print-directory pytest

pytest: setup
	@echo "==> pytest (CPU)"
	$(PY) -m pytest -m "not gpu and not slow" -q --durations=15

# Long CPU runs kept out of `make test` (e.g. a tiny model trained until it learns).
test-slow: setup
	$(PY) -m pytest -m "slow and not gpu" -q --durations=15

rust-check: clippy
	@echo "==> cargo fmt / test"
	cargo fmt --all --check
	cargo test --workspace --locked

clippy:
	cargo clippy --workspace --all-targets --locked -- -D warnings

py-lint: setup
	@echo "==> ruff"
	$(VENV)/bin/ruff check $(PY_LINT_PATHS)
	$(VENV)/bin/ruff format --check $(PY_LINT_PATHS)

typecheck: setup
	@echo "==> mypy"
	$(VENV)/bin/mypy $(PY_PACKAGES)

# The CUDA library built exactly as it ships (same code path and flags as the first-use
# build, link included) for sm_80 and sm_90; no GPU needed.
cuda-check: $(BUILD)/cuda-check.stamp
$(BUILD)/cuda-check.stamp: $(CSRC_ALL) $(VENV)/.nvcc $(wildcard msda_ops/src/msda_ops/build.py msda_ops/src/msda_ops/cuda_*.py)
	@if [ ! -f $(VENV)/.nvcc ]; then echo "==> cuda-check: SKIPPED: no CUDA toolkit (offline, none cached)"; exit 0; fi; \
	echo "==> nvcc build check (sm_80, sm_90)"; \
	$(PY) -m msda_ops.cuda_toolkit --compile-check --arch 80 90 --out $(BUILD)/cuda-check; \
	mkdir -p $(BUILD) && touch $@

# The CUDA kernels, unmodified, on emulated warps (32 threads each, checked shuffles,
# std::atomic_ref atomics) against a float64 reference under ASan + UBSan (~1 min here).
test-cuda-emu: setup
	@echo "==> CUDA kernels under CPU emulation (ASan + UBSan)"
	$(PY) tests/cuda_emu/run.py

# The same harness under TSan (races between emulated threads), on the quick grid.
test-cuda-emu-tsan: setup
	$(PY) tests/cuda_emu/run.py --sanitizer thread

# Proof that the emulation can fail: each injected bug must be caught (~8 min here).
test-cuda-emu-mutants: setup
	$(PY) tests/cuda_emu/mutants.py

# ================================================================ the floor stack
# The lowest versions claimed, which are the GPU machine's (DESIGN.md): torch 2.11, Triton 3.6,
# torchvision 0.26, transformers 5.17, in a venv of their own (the GPU machine's Python 3.12 is
# not installable here: this runs on $(PYTHON)). Not in `make test` (a second torch download);
# its venv is cached by a stamp like .venv's. Runs the op tests, the Triton-interpreter tests,
# the zoo model tests and the GPU day's rehearsal on that stack.
FLOOR_VENV := .venv-floor
FLOOR_PY := $(FLOOR_VENV)/bin/python
FLOOR_PIP := $(FLOOR_PY) -m pip --disable-pip-version-check -q
# numpy 2.3 (< 2.4): Triton 3.6's interpreter calls int() on a 1-element array for a runtime loop
# bound, an error since NumPy 2.4 (Triton 3.8 squeezes it first); the GPU path is unaffected.
FLOOR_SPEC := torch==2.11.0 torchvision==0.26.0 triton==3.6.0 transformers==5.17.0 numpy==2.3.5
FLOOR_TESTS := tests/test_msda_*.py tests/test_zoo_variants.py tests/test_zoo_transformers.py \
	tests/test_zoo_official.py tests/test_gpu_day.py tests/test_bench_msda.py

$(FLOOR_VENV)/.inputs: FORCE
	@mkdir -p $(@D)
	@want="$(PYTHON) $(FLOOR_SPEC)"; [ "$$(cat $@ 2>/dev/null)" = "$$want" ] || echo "$$want" > $@

$(FLOOR_VENV)/.deps: pyproject.toml msda_ops/pyproject.toml $(FLOOR_VENV)/.inputs $(RUST_SRCS)
	@echo "==> setting up $(FLOOR_VENV): $(FLOOR_SPEC)"
	@test -x $(FLOOR_PY) || $(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_PIP) install "setuptools>=77" wheel "maturin>=1.9,<2"
	$(FLOOR_PIP) install $(FLOOR_SPEC)
	$(FLOOR_PIP) install --no-build-isolation -e ./msda_ops
	$(FLOOR_PIP) install --no-build-isolation -e ".[test,bench]" $(FLOOR_SPEC)
	@touch $@

test-floor: $(FLOOR_VENV)/.deps
	@$(FLOOR_PY) -c 'import sys, torch, triton, transformers; print("==> floor:", sys.version.split()[0], torch.__version__, triton.__version__, transformers.__version__)'
	$(FLOOR_PY) -m pytest -q -p no:cacheprovider -m "not gpu and not slow" --durations=10 $(FLOOR_TESTS)
	$(FLOOR_PY) benchmarks/gpu_day.py --dry-run --no-carry-check --out $(BUILD)/gpu-day-floor

# ================================================================ the GPU machine
# There is no network and no Rust toolchain there: use its own python3 (torch preinstalled),
# install our pure-Python parts without dependencies, and take matcher_rs from the abi3 wheel
# built here by `make gpu-bundle` and carried in .whl/. GPU_PYTHON: the GPU day passes its own.
GPU_PYTHON ?= python3
SANITIZER := $(BUILD)/sanitizer/nvidia/cu13/bin/compute-sanitizer

test-gpu: $(GPU_INSTALLED)
	status=0; \
	$(MAKE) --no-print-directory gpu-pytest || status=1; \
	$(MAKE) --no-print-directory gpu-sanitize || status=1; \
	exit $$status

# The carried wheels, once (a stamp: gpu-pytest and gpu-sanitize on a fresh machine install
# first, after the GPU day's install step they do not): .whl/*.whl into the interpreter,
# compute-sanitizer (the [sanitizer] extra of cuda-toolkit, in .whl/sanitizer/) into build/sanitizer.
GPU_INSTALLED := $(BUILD)/gpu-install.stamp
gpu-install: $(GPU_INSTALLED)
$(GPU_INSTALLED): $(wildcard .whl/*.whl .whl/sanitizer/*.whl)
	if ls .whl/*.whl >/dev/null 2>&1; then $(GPU_PYTHON) -m pip install -q --no-index --no-deps --force-reinstall .whl/*.whl; fi
	if ls .whl/sanitizer/*.whl >/dev/null 2>&1; then \
		$(GPU_PYTHON) -m pip install -q --no-index --no-deps --upgrade --target $(BUILD)/sanitizer .whl/sanitizer/*.whl; \
		chmod +x $(SANITIZER); fi
	mkdir -p $(BUILD) && touch $@

# msda_ops runs from its sources (pure Python + kernels compiled on first use); -P keeps the
# checkout's matcher_rs/ (no compiled _core there) from shadowing the installed wheel.
# PYTEST_ARGS: more pytest options (the GPU day passes --junitxml).
gpu-pytest: $(GPU_INSTALLED)
	PYTHONPATH=$(CURDIR)/msda_ops/src $(GPU_PYTHON) -P -m pytest -m gpu -q -p no:cacheprovider --durations=15 $(PYTEST_ARGS)

# compute-sanitizer (memcheck, synccheck, initcheck) watches a forward + backward through every
# kernel path; the kernels are compiled first, outside it. No caching allocator, so that a read
# past a tensor's end leaves its allocation instead of landing in a cached block. Only reports
# whose stack is in our kernels or launcher count (benchmarks/sanitizer_log.py); the rest are logged.
gpu-sanitize: $(GPU_INSTALLED)
	PYTHONPATH=$(CURDIR)/msda_ops/src $(GPU_PYTHON) -P -m msda_ops.build --kind cpu cuda
	for tool in memcheck synccheck initcheck; do \
		echo "==> compute-sanitizer --tool $$tool"; \
		PYTORCH_NO_CUDA_MEMORY_CACHING=1 PYTHONPATH=$(CURDIR)/msda_ops/src $(GPU_PYTHON) \
			benchmarks/sanitizer_log.py --sanitizer $(SANITIZER) --tool $$tool \
			-- $(GPU_PYTHON) -P tests/support/sanitize_run.py || exit 1; \
	done

# The abi3 wheels (one build for CPython 3.11+): the root distribution and msda-ops.
wheel: setup
	$(VENV)/bin/maturin build --release --out dist
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w dist ./msda_ops

# Everything the GPU machine lacks, as Python 3.12 wheels in .whl/ (git-ignored; pass
# `carry: [".whl"]` to the device tool): our abi3 wheel, pycocotools, and the op anchors
# of benchmarks/bench_msda.py (deformops; the original SenseTime kernel is built there from
# .anchors/, see gpu-anchors: PyPI's ms-deform-attn needs libcudart.so.12). In .whl/sanitizer/
# (not installed with the others): compute-sanitizer, the [sanitizer] extra of cuda-toolkit
# 13.0.3, the CUDA release of the GPU machine's torch 2.11+cu130.
GPU_WHEELS := pycocotools deformops
GPU_SANITIZER := nvidia-cuda-sanitizer-api==13.0.85.*
GPU_PLATFORMS := $(foreach v,28 25 17,--platform manylinux_2_$(v)_x86_64) --platform manylinux2014_x86_64
gpu-bundle: setup
	rm -rf .whl && mkdir -p .whl/sanitizer
	$(VENV)/bin/maturin build --release --quiet --out .whl
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp $(GPU_PLATFORMS) -d .whl $(GPU_WHEELS)
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp $(GPU_PLATFORMS) -d .whl/sanitizer "$(GPU_SANITIZER)"
	@ls -la .whl .whl/sanitizer

# The original SenseTime kernel's sources (Deformable-DETR's models/ops), the GPU day's anchor:
# copied into the git-ignored .anchors/, never committed. ORIGINAL_SRC: a checkout or a git dir.
gpu-anchors:
	@test -n "$(ORIGINAL_SRC)" || { echo "set ORIGINAL_SRC=<Deformable-DETR checkout or git dir>" >&2; exit 2; }
	rm -rf .anchors/deformable_detr_ops && mkdir -p .anchors/deformable_detr_ops
	if [ -d "$(ORIGINAL_SRC)/models/ops" ]; then cp -r "$(ORIGINAL_SRC)/models/ops/." .anchors/deformable_detr_ops/; \
	else git --git-dir="$(ORIGINAL_SRC)" archive HEAD models/ops | tar -x --strip-components=2 -C .anchors/deformable_detr_ops; fi
	# Today's torch dispatches on a ScalarType (the 2020 sources pass the removed Tensor::type()).
	sed -i 's/AT_DISPATCH_FLOATING_TYPES(value.type()/AT_DISPATCH_FLOATING_TYPES(value.scalar_type()/' \
		.anchors/deformable_detr_ops/src/cuda/ms_deform_attn_cuda.cu
	@ls .anchors/deformable_detr_ops

# The GPU day (benchmarks/gpu_day.py): rehearse here, then run in two device calls with
# carry [".whl", ".anchors"]: `python3 benchmarks/gpu_day.py --out $$OUT` (= make gpu-day),
# then the same with `--call 2`.
gpu-day-dry-run: setup
	$(PY) benchmarks/gpu_day.py --dry-run

gpu-day:
	$(GPU_PYTHON) benchmarks/gpu_day.py --out "$${OUT:-gpu-day-out}" $(GPU_DAY_ARGS)

# ================================================================ jobs
# MODEL: a zoo name, Hub id or folder (default: the bundled zoo/pretrained/shapes-ddetr). IMAGES:
# files, folders or globs, each single-quoted so that Python, not the shell, expands them.
demo: setup
	$(PY) -m zoo.demo $(if $(MODEL),--model '$(MODEL)') $(if $(IMAGES),--images $(foreach img,$(IMAGES),'$(img)'))

# The engines alone: the deformable-attention kernel vs its reference, matcher_rs vs scipy.
demo-engines: setup
	$(PY) benchmarks/bench_engines.py

# The bundled demo model ($(DEMO_MODEL)), trained from scratch on synthetic shapes by
# the project's own pipeline: data, training, COCO evaluation, export. CPU: about an hour.
DEMO_DATA := runs/shapes-data
DEMO_RUN := runs/shapes-ddetr
DEMO_MODEL := zoo/pretrained/shapes-ddetr
DEMO_MODEL_ARGS := depth=18 width=24 norm=group hidden_dim=64 nheads=4 enc_layers=2 \
	dec_layers=3 ffn_dim=256 num_queries=30 num_levels=3 dropout=0.0
demo-model: setup
	$(PY) -m zoo shapes $(DEMO_DATA) --num-train 6000 --num-val 500 --size 128 --seed 0
	$(PY) -m zoo train --model ddetr-two-stage --data $(DEMO_DATA) --image-size 128 \
		--overrides $(DEMO_MODEL_ARGS) --batch-size 16 --workers 1 --lr 1e-3 --lr-backbone 1e-3 \
		--epochs 20 --lr-drop 16 --seed 0 --out $(DEMO_RUN)
	$(PY) -m zoo convert $(DEMO_RUN) $(DEMO_MODEL)
	$(PY) -m zoo eval --model $(DEMO_MODEL) --data $(DEMO_DATA) --batch-size 16 \
		--workers 1 --out $(DEMO_MODEL)/eval.json
	grep '"event": "eval"' $(DEMO_RUN)/metrics.jsonl > $(DEMO_MODEL)/training_evals.jsonl

bench: setup
	$(PY) benchmarks/bench_msda.py
	$(PY) benchmarks/roofline_cpu.py --threads 2
	$(PY) benchmarks/bench_matcher.py

# DETR vs Deformable DETR (+ refinement, two-stage) on multi-size shapes, DETR at 10x the
# epochs (docs/convergence.md): one result file per (variant, seed) in
# benchmarks/results/convergence_cpu/, written as each run finishes; a rerun skips finished
# runs. Then the README's summary and the doc's tables. More: CONVERGENCE_SEEDS="0 1 2 3".
CONVERGENCE_SEEDS ?= 0 1 2
bench-convergence: setup
	$(PY) benchmarks/bench_convergence.py --no-progress --seeds $(CONVERGENCE_SEEDS)
	$(PY) benchmarks/report_convergence.py benchmarks/results/convergence_cpu.json --readme README.md --doc docs/convergence.md

clean:
	rm -rf $(BUILD) target msda_ops/build .mypy_cache .ruff_cache .pytest_cache

FORCE:
