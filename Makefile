# rtp_cluster developer targets.  `make test` is what CI runs (.ci/run).

PYTHON ?= python3
VENV   := .venv
# stamps: the package with its dependencies and the test tools (make test), or with rtp-io
# only (make demo)
STAMP  := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: all venv test demo bench bench-memory bench-sharing bench-sharing-scale bench-http clean

all: test

venv: $(STAMP)

define new-venv
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "rtp_cluster needs Python 3.11 or newer ($(PYTHON))" >&2; exit 1; }
	test -x $(VENV)/bin/python || { echo "creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
endef

# Re-installed only when pyproject.toml changes (the package itself is editable).
$(STAMP): pyproject.toml
	scripts/debian-deps.sh demo
	$(new-venv)
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(STAMP) $(DEMO_STAMP)

# The demo needs no test tools; an environment made by `make test` already has everything.
$(DEMO_STAMP): pyproject.toml
	scripts/debian-deps.sh demo
	$(new-venv)
	@echo "installing rtp_cluster, its runtime dependencies and rtp-io into $(VENV)"
	$(VENV)/bin/python -m pip install --disable-pip-version-check -e '.[demo]'
	touch $(DEMO_STAMP)

test: venv
	scripts/debian-deps.sh test
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

demo: $(DEMO_STAMP)
	$(VENV)/bin/python scripts/demo.py $(DEMO_ARGS)

# the README's performance table comes from this file, committed (python -m bench.report FILE)
bench: venv
	$(VENV)/bin/python -m bench.runner --rounds 3 --duration 10 --out bench/results/bench.json

bench-memory: venv
	$(VENV)/bin/python -m bench.memory --sessions 100000 --repeats 3

# issue 16: control-path latency (V, and U/L/D at 1,000 calls/s) while each bulk admin
# operation runs against 200,000 sessions on scripted members, three whole runs a minute
# apart; bench/results/stall.json
bench-stall: venv
	$(VENV)/bin/python -m bench.stall --sessions 200000 --rate 1000 --repeats 3 --rest 60

# two loads: a closed loop of short calls (most changes coalesce), then 1,000 calls/s that
# each live 0.2 s (every offer, answer and delete reaches Redis); BASELINE=CHECKOUT adds C,
# that checkout's cluster sharing through the same Redis, to compare revisions
BASELINE_ARGS = $(if $(BASELINE),--baseline $(BASELINE))
bench-sharing: venv
	$(VENV)/bin/python -m bench.runner --b cluster-redis --rounds 3 --duration 10 \
		--concurrency 16 --out bench/results/sharing-closed.json $(BASELINE_ARGS)
	$(VENV)/bin/python -m bench.runner --b cluster-redis --rounds 10 --duration 5 \
		--concurrency 256 --rate 1000 --hold 0.1 --out bench/results/sharing-paced.json \
		$(BASELINE_ARGS)

# issue 18's targets: three instances, 100,000 shared sessions, scripted members
bench-sharing-scale: venv
	$(VENV)/bin/python -m bench.sharing_scale --sessions 100000

# the metrics requirement: the HTTP listener on and /metrics scraped every second (B) against
# the same cluster without it (A) and its twin (C, to show the noise), interleaved in one
# run; B/A must stay within 3 %
bench-http: venv
	$(VENV)/bin/python -m bench.runner --b cluster-http --rounds 8 --twin --duration 10 \
		--concurrency 16,64 --out bench/results/http.json

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
