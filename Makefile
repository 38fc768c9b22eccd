# Two commands do all the set-up on a fresh machine:
#   make demo   - trains on the embedded default dataset and writes a map into demo-out/
#   make test   - runs the whole test suite, the browser test included
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: demo test venv browser clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

# Headless Chromium for the end-to-end browser test (Debian's package; skipped when present).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: run 'sudo apt-get install chromium' for the browser test"; fi; }

demo: $(STAMP)
	$(PY) -m tsimcne_widgets demo --out demo-out

test: $(STAMP) browser
	$(PY) -m pytest -q -ra

clean:
	rm -rf $(VENV) demo-out .pytest_cache
