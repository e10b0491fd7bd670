# One entry point for set-up, tests and the demo. Everything the project needs is
# installed into .venv from the project's own files; stamps under .venv make a second
# run with nothing changed skip every heavy step.

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
CU_SRCS := $(wildcard msda_ops/src/msda_ops/csrc/cuda/*.cu)
CSRC_ALL := $(shell find msda_ops/src/msda_ops/csrc -type f)
PY_PACKAGES := msda_ops/src/msda_ops zoo matcher_rs
PY_LINT_PATHS := $(PY_PACKAGES) tests benchmarks

.PHONY: help setup test test-gpu test-slow wheel gpu-bundle gpu-anchors gpu-day gpu-day-dry-run demo demo-engines demo-model bench-convergence rust-check py-lint typecheck cuda-check test-cuda-emu test-cuda-emu-tsan test-cuda-emu-mutants gpu-pytest gpu-sanitize pytest bench clean

help:
	@echo "make demo      the main job (offline)"
	@echo "make demo-model  re-train the bundled demo model (CPU: about an hour)"
	@echo "make demo-engines  the op kernel vs its reference, matcher_rs vs scipy"
	@echo "make test      the whole CPU test suite (sets up .venv on first use)"
	@echo "make test-gpu  the CUDA tests (on a machine with a GPU)"
	@echo "make gpu-day-dry-run  rehearse the one-call GPU validation + timing run (benchmarks/gpu_day.py)"
	@echo "make test-slow long CPU tests (training until a tiny model learns)"
	@echo "make bench     CPU benchmarks; results as JSON in benchmarks/results/"
	@echo "make bench-convergence  the papers' claims on multi-size shapes: DETR vs Deformable DETR, ablations (~100 CPU min per seed)"

# ---------------------------------------------------------------- set-up
$(VENV)/.deps: pyproject.toml msda_ops/pyproject.toml
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

# nvcc and the CUDA headers from PyPI, at the exact CUDA release torch was built with
# (mixed releases fail). The link step wants libcudart.so beside the shipped .so.13.
$(VENV)/.nvcc: $(VENV)/.deps
	$(PIP) install "cuda-toolkit[nvcc,cccl]==$$($(PY) -c 'import importlib.metadata as m; print(m.version("cuda-toolkit"))')"
	$(PY) -m msda_ops.cuda_toolkit --link-cudart
	@touch $@

setup: $(VENV)/.deps $(VENV)/.ext

# ---------------------------------------------------------------- checks
rust-check:
	@echo "==> cargo fmt / clippy / test"
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	cargo test --workspace --locked

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
$(BUILD)/cuda-check.stamp: $(CSRC_ALL) $(VENV)/.nvcc msda_ops/src/msda_ops/build.py msda_ops/src/msda_ops/cuda_toolkit.py
	@echo "==> nvcc build check (sm_80, sm_90)"
	$(PY) -m msda_ops.cuda_toolkit --compile-check --arch 80 90 --out $(BUILD)/cuda-check
	@mkdir -p $(BUILD) && touch $@

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

pytest: setup
	@echo "==> pytest (CPU)"
	$(PY) -m pytest -m "not gpu and not slow" -q

# Long CPU runs kept out of `make test` (e.g. a tiny model trained until it learns).
test-slow: setup
	$(PY) -m pytest -m "slow and not gpu" -q

test: setup
	$(MAKE) --no-print-directory rust-check
	$(MAKE) --no-print-directory py-lint
	$(MAKE) --no-print-directory typecheck
	$(MAKE) --no-print-directory cuda-check
	$(MAKE) --no-print-directory test-cuda-emu
	$(MAKE) --no-print-directory pytest

# On the GPU machine there is no network and no Rust toolchain: use its own python3
# (torch preinstalled), install our pure-Python parts without dependencies, and take
# matcher_rs from the abi3 wheel built here by `make gpu-bundle` and carried in .whl/.
# Then compute-sanitizer (memcheck, synccheck, initcheck; from the carried
# cuda-toolkit[sanitizer] wheel) watches a forward + backward through every kernel path.
SANITIZER := $(BUILD)/sanitizer/nvidia/cu13/bin/compute-sanitizer
test-gpu:
	status=0; \
	$(MAKE) --no-print-directory gpu-pytest || status=1; \
	$(MAKE) --no-print-directory gpu-sanitize || status=1; \
	exit $$status

# PYTEST_ARGS: more pytest options (the GPU day passes --junitxml).
gpu-pytest:
	if ls .whl/*.whl >/dev/null 2>&1; then python3 -m pip install -q --no-index --no-deps --force-reinstall .whl/*.whl; fi
	# msda_ops runs from its sources (pure Python + kernels compiled on first use); -P keeps
	# the checkout's matcher_rs/ (no compiled _core there) from shadowing the installed wheel.
	PYTHONPATH=$(CURDIR)/msda_ops/src python3 -P -m pytest -m gpu -q -p no:cacheprovider $(PYTEST_ARGS)

# The kernels compiled first, outside the sanitizer; no caching allocator, so that a read
# past a tensor's end leaves its allocation instead of landing in a cached block.
gpu-sanitize:
	python3 -m pip install -q --no-index --no-deps --target $(BUILD)/sanitizer .whl/sanitizer/*.whl
	chmod +x $(SANITIZER)
	PYTHONPATH=$(CURDIR)/msda_ops/src python3 -P -m msda_ops.build --kind cpu cuda
	for tool in memcheck synccheck initcheck; do \
		echo "==> compute-sanitizer --tool $$tool"; \
		PYTORCH_NO_CUDA_MEMORY_CACHING=1 PYTHONPATH=$(CURDIR)/msda_ops/src $(SANITIZER) \
			--tool $$tool --error-exitcode 1 $$( [ $$tool = memcheck ] && echo --leak-check no ) \
			python3 -P tests/support/sanitize_run.py || exit 1; \
	done

# The abi3 wheels (one build for CPython 3.10+): the root distribution and msda-ops.
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

# The GPU day (benchmarks/gpu_day.py): rehearse here, then run in one device call with
# carry [".whl", ".anchors"]: `python3 benchmarks/gpu_day.py --out $$OUT` (= make gpu-day).
gpu-day-dry-run: setup
	$(PY) benchmarks/gpu_day.py --dry-run

gpu-day:
	python3 benchmarks/gpu_day.py --out "$${OUT:-gpu-day-out}"

# ---------------------------------------------------------------- jobs
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
	$(PY) benchmarks/bench_matcher.py

# DETR vs Deformable DETR (+ refinement, two-stage) trained on shapes at equal budgets:
# AP against steps, JSON + PNG in benchmarks/results/ (about 40 minutes on a 2-core CPU).
# The whole protocol (97 min on 2 cores for seed 0), then the README's tables.
# More seeds: make bench-convergence CONVERGENCE_SEEDS="0 1" (seed 0 is convergence_cpu).
CONVERGENCE_SEEDS ?= 0
bench-convergence: setup
	@set -e; files=""; for seed in $(CONVERGENCE_SEEDS); do \
		name=convergence_cpu; [ $$seed = 0 ] || name=convergence_cpu_seed$$seed; \
		$(PY) benchmarks/bench_convergence.py --no-progress --seed $$seed --name $$name; \
		files="$$files benchmarks/results/$$name.json"; \
	done; $(PY) benchmarks/report_convergence.py $$files

clean:
	rm -rf $(BUILD) target msda_ops/build .mypy_cache .ruff_cache .pytest_cache
