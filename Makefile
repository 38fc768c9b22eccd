# Two commands do all the set-up on a fresh machine:
#   make demo   - trains on the embedded default dataset and writes a map into demo-out/
#   make test   - runs the whole test suite, the browser test included (then the
#                 narrow_conv tests again with oneDNN held to AVX2)
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

# The narrow-convolution layout tests run twice: at the CPU's own instruction set, then
# with oneDNN held to AVX2, so an AVX-512 machine checks the AVX2 kernels as well.  Both
# passes run; the exit status is the first pass's when it failed, else the second's.
# "No tests collected" (5) in the second pass only counts once $(NARROW_TESTS) exists.
NARROW_TESTS ?= tests/test_memory_layout.py

test: $(STAMP) browser
	@status=0; \
	echo "$(PY) -m pytest -q -ra --durations=25"; \
	$(PY) -m pytest -q -ra --durations=25 || status=$$?; \
	echo "ONEDNN_MAX_CPU_ISA=AVX2 $(PY) -m pytest -q -ra -m narrow_conv"; \
	ONEDNN_MAX_CPU_ISA=AVX2 $(PY) -m pytest -q -ra -m narrow_conv; narrow=$$?; \
	if [ $$narrow -eq 5 ] && [ ! -e "$(NARROW_TESTS)" ]; then \
	  echo "no narrow_conv tests ($(NARROW_TESTS) does not exist yet)"; narrow=0; fi; \
	[ $$status -ne 0 ] || status=$$narrow; \
	exit $$status

clean:
	rm -rf $(VENV) demo-out .pytest_cache
