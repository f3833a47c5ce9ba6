# The two commands of the README. Each creates the virtual environment when it is
# missing (or older than pyproject.toml), installs merkit into it, then runs its job.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test install install-test clean

$(BIN)/.merkit-installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[text]'
	touch $@

$(BIN)/.merkit-test-installed: $(BIN)/.merkit-installed
	$(BIN)/python -m pip install --quiet -e '.[text,dev]'
	touch $@

install: $(BIN)/.merkit-installed
install-test: $(BIN)/.merkit-test-installed

demo: install
	$(BIN)/merkit demo

test: install-test
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
