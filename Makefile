# Set-up and the two entry points the README opens with: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
EDGE := $(VENV)/bin/edge
STAMP := $(VENV)/.installed
PROMPT ?= Explain in two sentences why the sky is blue.

.PHONY: install demo demo-search test bench bench-embed fonts

# torch is pinned first: on this machine kind a CPU wheel of 2.13.0 is on disk, any other
# spec pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[export,serve,viz,scale,test]'
	$(MAKE) --no-print-directory fonts
	touch $(STAMP)

# CJK labels in `edge inspect` pictures need a CJK font (matplotlib's DejaVu has none):
# Debian's fonts-noto-cjk when apt is there and we are root; otherwise say what is missing.
fonts:
	@fc-list 2>/dev/null | grep -qi cjk || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-cjk >/dev/null; } || \
		echo "note: no CJK font found; install one (Debian: apt-get install fonts-noto-cjk) for CJK labels"

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m export.default
	$(EDGE) generate --max-tokens 96 "$(PROMPT)"

# Embeddings: all-MiniLM-L6-v2 exported once to int8 in the edge cache, then the project's
# own documentation indexed and searched.
demo-search: $(STAMP)
	$(PY) -m export.default embeddings
	$(PY) examples/semantic_search.py

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m export.default
	$(PY) benchmarks/generate.py

bench-embed: $(STAMP)
	$(PY) -m export.default embeddings
	$(PY) benchmarks/embed.py
