# Two entry points on a fresh machine: `make demo` and `make test`.
# Each creates .venv if needed and installs starmd into it; torch is pinned through
# constraints.txt so that pip takes the CPU build.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.starmd-installed

.PHONY: demo test test-slow lint install clean model fast-model

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/starmd demo -o demo_out

test: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# The bundled model's recipe: prepare the committed corpus, train the small configuration (CPU;
# on a GPU use configs/small_gpu.yaml), export the best validation checkpoint with the
# recommended sampling defaults. MODEL_TIME bounds the wall time; INIT starts from weights
# (the bundled model's last leg: INIT=models/dev/starmd-small-dev.safetensors
# MODEL_TIME=00:00:55:00, see docs/model_card.md). That gives version 1; versions 2 and 3 are
# fine-tuning legs on top of it (configs/small_cpu_geometry.yaml, then configs/small_cpu_v3.yaml
# with --init; their commands are in docs/model_card.md, "Version 2" and "Version 3").
MODEL_TIME ?= 00:12:00:00
INIT ?=
model: $(STAMP)
	$(VENV)/bin/starmd prepare corpus/md -o data/corpus --overwrite \
		--split-file src/starmd/assets/corpus/manifest.csv
	$(VENV)/bin/starmd train data/corpus -o runs/small --config configs/small_cpu.yaml \
		--max-time $(MODEL_TIME) $(if $(INIT),--init $(INIT))
	$(PY) scripts/export_model.py runs/small/checkpoints/best.ckpt \
		src/starmd/assets/models/starmd-small.safetensors --dt-ps 50 --steps 5 --sampler dpm2

# The bundled few-step student's recipe (since session 32; docs/model_card.md, "Few-step student
# with an energy-score term"): distil version 5's sampler with the energy-score term in five
# legs of one CPU thread each, each leg starting from the last one's weights: 5-step dpm2
# teacher at weights 0.5, 2.0 and 3.0; a 10-step dpm2 teacher; the same with the torsion
# energy score (weight 2.0). Export with the student's sampling defaults. Each leg stops where
# the bundled one stopped (steps 544, 239, 512, 458, 453) on the schedule of the configured 100
# epochs (trainer.stop_step); the corpus has grown since, so a rerun is close to, not
# bit-identical with, the bundled weights.
TEACHER := src/starmd/assets/models/starmd-small.safetensors
fast-model: $(STAMP)
	$(VENV)/bin/starmd prepare corpus/md -o data/corpus --overwrite \
		--split-file src/starmd/assets/corpus/manifest.csv
	$(VENV)/bin/starmd train data/corpus -o runs/fast_es1 --config configs/distill_cpu_v5.yaml \
		--distill-from $(TEACHER) --set trainer.stop_step=544
	$(VENV)/bin/starmd train data/corpus -o runs/fast_es2 --config configs/distill_cpu_v5.yaml \
		--distill-from $(TEACHER) --init runs/fast_es1/model.safetensors \
		--set distill.energy_score=2.0 --set trainer.stop_step=239
	$(VENV)/bin/starmd train data/corpus -o runs/fast_es3 --config configs/distill_cpu_v5.yaml \
		--distill-from $(TEACHER) --init runs/fast_es2/model.safetensors \
		--set distill.energy_score=3.0 --set trainer.stop_step=512
	$(VENV)/bin/starmd train data/corpus -o runs/fast_dpm10 --config configs/distill_cpu_v5.yaml \
		--distill-from $(TEACHER) --init runs/fast_es3/model.safetensors \
		--set distill.energy_score=3.0 --set distill.teacher_steps=10 --set trainer.stop_step=458
	$(VENV)/bin/starmd train data/corpus -o runs/fast_tes --config configs/distill_cpu_v5.yaml \
		--distill-from $(TEACHER) --init runs/fast_dpm10/model.safetensors \
		--set distill.energy_score=3.0 --set distill.teacher_steps=10 \
		--set distill.torsion_energy_score=2.0 --set trainer.stop_step=453
	$(PY) scripts/export_model.py runs/fast_tes/model.safetensors \
		src/starmd/assets/models/starmd-small-fast.safetensors --dt-ps 50 --steps 1 --sampler cm

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

clean:
	rm -rf $(VENV) demo_out .pytest_cache
