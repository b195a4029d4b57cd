# imbaseg: the two commands a newcomer needs are `make demo` and `make test`.
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
IMB   := $(PY) -m imbaseg
PYTEST_ARGS ?= -q

.PHONY: install demo study-demo test lint bench figures gpu-check gpu-carry slurm-start slurm-stop

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

# The main job end to end on the built-in synthetic data, on CPU (README: 2 min 30 s on 2 free cores).
demo: $(STAMP)
	$(PY) -m imbaseg.demo

# The loss study in miniature: 3 synthetic datasets x 3 losses x 2 seeds, 2 cells at once on CPU, then its
# report in studies/demo/ (README "Loss study": the measured time). Run again, it continues where it stopped.
study-demo: $(STAMP)
	$(IMB) study run configs/study-demo.yaml --jobs 2

# pytest exits 5 when it collects nothing; that is not a failure of the suite.
test: $(STAMP)
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

lint: $(STAMP)
	$(PY) -m ruff check imbaseg tests

bench: $(STAMP)
	@for f in tests/benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit $$?; done

# PROFILE=budget (short CPU runs, the committed figures) or PROFILE=study (the study's presets, on a GPU)
PROFILE ?= budget
figures: $(STAMP)
	$(PY) -m imbaseg.viz.make_figures --profile $(PROFILE) $(FIGURES_ARGS)

# Everything the GPU still owes, in one call of at most 8 minutes (README: GPU check). No $(STAMP): the
# GPU machine reaches no package registry; its own python3 has the packages. Exit 2 without a GPU.
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
gpu-check:
	$(GPU_PY) scripts/gpu_check.py $(GPU_CHECK_ARGS)

# What the GPU check needs from ../shared/data, copied into .gpu-carry/ (ignored) for the call's carry.
gpu-carry:
	rm -rf .gpu-carry && mkdir -p .gpu-carry/data/samples
	cp -r ../shared/data/DRIVE .gpu-carry/data/
	cp -r ../shared/data/samples/CVC-ClinicDB ../shared/data/samples/ISIC2018 .gpu-carry/data/samples/
	du -sh .gpu-carry

# A single-node Slurm on this machine for the tests of `imbaseg study --executor slurm` (root, Debian).
slurm-start:
	bash scripts/slurm/start.sh

slurm-stop:
	bash scripts/slurm/stop.sh
