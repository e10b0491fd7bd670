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

.PHONY: help setup test test-gpu test-slow wheel gpu-bundle gpu-anchors gpu-day gpu-day-dry-run demo demo-engines demo-model bench-convergence rust-check py-lint typecheck cuda-check pytest bench clean

help:
	@echo "make demo      the main job (offline)"
	@echo "make demo-model  re-train the bundled demo model (CPU: about an hour)"
	@echo "make demo-engines  the op kernel vs its reference, matcher_rs vs scipy"
	@echo "make test      the whole CPU test suite (sets up .venv on first use)"
	@echo "make test-gpu  the CUDA tests (on a machine with a GPU)"
	@echo "make gpu-day-dry-run  rehearse the one-call GPU validation + timing run (benchmarks/gpu_day.py)"
	@echo "make test-slow long CPU tests (training until a tiny model learns)"
	@echo "make bench     CPU benchmarks; results as JSON in benchmarks/results/"
	@echo "make bench-convergence  DETR vs Deformable DETR training curves on shapes"

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

# Compile-only: the CUDA sources must build for sm_80 and sm_90 (no GPU needed).
cuda-check: $(BUILD)/cuda-check.stamp
$(BUILD)/cuda-check.stamp: $(CSRC_ALL) $(VENV)/.nvcc
	@echo "==> nvcc compile check (sm_80, sm_90)"
	$(PY) -m msda_ops.cuda_toolkit --compile-check --arch 80 90 --out $(BUILD)/cuda-check
	@mkdir -p $(BUILD) && touch $@

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
	$(MAKE) --no-print-directory pytest

# On the GPU machine there is no network and no Rust toolchain: use its own python3
# (torch preinstalled), install our pure-Python parts without dependencies, and take
# matcher_rs from the abi3 wheel built here by `make gpu-bundle` and carried in .whl/.
test-gpu:
	if ls .whl/*.whl >/dev/null 2>&1; then python3 -m pip install -q --no-index --no-deps --force-reinstall .whl/*.whl; fi
	# msda_ops runs from its sources (pure Python + kernels compiled on first use); -P keeps
	# the checkout's matcher_rs/ (no compiled _core there) from shadowing the installed wheel.
	PYTHONPATH=$(CURDIR)/msda_ops/src python3 -P -m pytest -m gpu -q -p no:cacheprovider

# The abi3 wheels (one build for CPython 3.10+): the root distribution and msda-ops.
wheel: setup
	$(VENV)/bin/maturin build --release --out dist
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w dist ./msda_ops

# Everything the GPU machine lacks, as Python 3.12 wheels in .whl/ (git-ignored; pass
# `carry: [".whl"]` to the device tool): our abi3 wheel, pycocotools, and the op anchors
# of benchmarks/bench_msda.py (the original SenseTime kernel, deformops).
GPU_WHEELS := pycocotools ms-deform-attn deformops
gpu-bundle: setup
	rm -rf .whl && mkdir -p .whl
	$(VENV)/bin/maturin build --release --quiet --out .whl
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)
	@ls -la .whl

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
bench-convergence: setup
	$(PY) benchmarks/bench_convergence.py --no-progress

clean:
	rm -rf $(BUILD) target msda_ops/build .mypy_cache .ruff_cache .pytest_cache
