# Everything starts from nothing: `make demo` and `make test` create .venv and node_modules first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
INFRA_VENV := .venv-infra

.PHONY: deps demo host test check-infra lint bench clean chromium

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "Python 3.11+ is needed"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(INFRA_VENV)/.installed: requirements-infra.txt
	$(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(INFRA_VENV)/bin/python -m pip install --quiet -r requirements-infra.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

deps: $(VENV)/.installed node_modules/.installed

demo: deps
	$(PY) -m tools.demo

host: deps
	$(PY) -m tools.functions_host --port 7071

test: deps check-infra lint chromium
	$(PY) -m pytest

# The console's browser tests (tests/test_console.py) drive Debian's chromium through Playwright; Playwright's
# own browser download is not used. Installed when missing (as root, as on CI).
chromium:
	@test -x /usr/bin/chromium || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

# checkov on every Bicep file, offline. Findings left unfixed carry a checkov:skip comment with the reason
# (listed in the README's Deploy section). checkov exits 0 when it cannot parse a file: that fails here.
check-infra: $(INFRA_VENV)/.installed
	CKV_SKIP_PACKAGE_UPDATE_CHECK=true $(INFRA_VENV)/bin/checkov --directory infra --framework bicep \
		--skip-download --compact --quiet > $(INFRA_VENV)/checkov.out; status=$$?; cat $(INFRA_VENV)/checkov.out; \
		if grep -q "Parsing errors" $(INFRA_VENV)/checkov.out; then echo "checkov could not parse a Bicep file"; exit 1; fi; \
		exit $$status

# Benchmarks of issue 4 (not part of the tests; 15-25 minutes on 2 cores). Rewrites the table in
# BENCHMARKS.md; raw JSON in bench/results/. Select with e.g. BENCH_ARGS="--sizes 100k,1m".
# The exports start from compiled bytecode, as an installed package's do: where PYTHONDONTWRITEBYTECODE
# is set (as on these machines), the editable install would compile shared/ at every start (~70 ms).
bench: deps
	$(PY) -m compileall -q shared tools
	$(PY) -m bench.run $(BENCH_ARGS)

# Mirror mode at real limits (issue 19): a first mirror run of 1M rows against a plain one, and 1% leavers.
bench-mirror: deps
	$(PY) -m compileall -q shared tools
	$(PY) -m bench.mirror $(BENCH_ARGS)

# Lint, format, types, the import-linter layers (pyproject.toml) and the code's shape (tools/code_shape.py).
lint: deps
	$(VENV)/bin/ruff check shared tools tests bench function_app.py
	$(VENV)/bin/ruff format --check shared tools tests bench function_app.py
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) -m tools.code_shape

clean:
	rm -rf $(VENV) $(INFRA_VENV) node_modules .pytest_cache
