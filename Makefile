# Two entry points for a new machine: `make demo` and `make test`. Both set up .venv first (idempotent).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
DEPS := requirements.txt requirements-dev.txt pyproject.toml setup.py $(wildcard pyflow/csrc/*.cpp pyflow/csrc/*.h)

.PHONY: setup test demo lint clean

setup: $(STAMP)

$(STAMP): $(DEPS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt "pybind11>=2.10" "setuptools>=64" wheel
	$(PY) -m pip install -q --no-build-isolation -e .
	touch $(STAMP)

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q

# Upscale the bundled clip x4 with the shipped PSNR weights; prints where the frames, mp4 and side-by-side are.
demo: setup
	$(PY) iSeeBetterTest.py --upscale_only --input samples/bigbuckbunny_lr.mp4 --output Results/demo \
		--model weights/iSeeBetter_x4_psnr.pth

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) build *.egg-info pyflow/*.so
