# Quickstart: `make run` (the main job) and `make test`. Both create .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup chromium npm-browser report-screenshot run browser demo test bench compat clean

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory chromium
	@$(MAKE) --no-print-directory npm-browser
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# The report tests open the HTML report in the system Chromium (Playwright drives it; no browser download).
chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update && apt-get install -y chromium; \
	else \
		echo "Chromium is missing: the report tests will be skipped. Install it with"; \
		echo "  sudo apt-get install chromium   (Debian/Ubuntu; or set RTSIM_CHROMIUM=/path/to/chrome)"; \
	fi

# @openai/agents-realtime (its browser bundle) for the matrix's browser row (compat/browser/), pinned, from npm.
AGENTS_REALTIME_VERSION := 0.20.0
NPM_BROWSER := build/npm-browser
npm-browser:
	@if command -v npm >/dev/null 2>&1; then \
		mkdir -p $(NPM_BROWSER) && cd $(NPM_BROWSER) && \
		([ -f package.json ] || npm init -y >/dev/null) && \
		npm install --no-audit --no-fund --save-exact @openai/agents-realtime@$(AGENTS_REALTIME_VERSION); \
	else \
		echo "npm is missing: the agents-realtime browser test will be skipped (apt-get install npm)"; \
	fi

run: $(STAMP)
	$(BIN)/rtsim run

# The WebRTC library against the browser reference client: a JS page in headless Chromium (Playwright, from
# the dev extras, drives the system Chromium installed by `chromium`; no browser download, no npm).
browser: $(STAMP)
	$(BIN)/rtsim run scenarios/library/webrtc --client browser --jobs 1

# docs/report.png: the report of a known failure (the naive client loses a connection mid-answer).
report-screenshot: $(STAMP)
	rm -rf build/report-screenshot
	-$(BIN)/rtsim run drop-mid-response --client naive --out build/report-screenshot
	$(BIN)/python -m rtsim.scenarios.screenshot build/report-screenshot/*/report.html docs/report.png

demo: $(STAMP)
	$(BIN)/rtsim demo

# Three test processes on two cores: most tests wait on real sockets and timelines (12 min serial, 5 here);
# tests of one xdist_group (the Chromium ones) share a process.
test: $(STAMP) node-clients
	$(BIN)/ruff check .
	$(BIN)/pytest -q -n 3 --dist loadgroup

bench: $(STAMP)
	$(BIN)/rtsim bench sessions
	$(BIN)/rtsim toxiproxy --bench
	$(BIN)/python -m rtsim.simulator.vad

# The pinned Node clients (compat/node/package-lock.json): tests/server/test_tls.py runs the official Node SDK
# over --tls with them. npm ci only when the lockfile is newer than what is installed.
node-clients:
	@if command -v npm >/dev/null 2>&1; then \
		if [ ! -d compat/node/node_modules ] || [ compat/node/package-lock.json -nt compat/node/node_modules ]; then \
			(cd compat/node && npm ci --no-audit --no-fund --loglevel=error) && touch compat/node/node_modules; \
		fi; \
	else \
		echo "npm is missing: the Node SDK test will be skipped (apt-get install npm)"; \
	fi

# The compatibility matrix: each pinned framework (own venv under build/compat/, npm under compat/node/) through
# the fault scenarios over --tls. The table goes to build/compat/matrix.md (README: compat/matrix.py --readme).
# npm-browser: the official @openai/agents-realtime bundle the browser row's page loads in Chromium.
compat: $(STAMP) npm-browser
	bash compat/install.sh
	$(BIN)/python compat/matrix.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
