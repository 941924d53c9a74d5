# tierlift: the two commands are `make demo` and `make test`; both set up .venv themselves.
# Everything (virtualenv, tests, `chalice package`) runs on Python 3.13, the Lambda runtime the
# functions deploy on: Chalice takes the runtime from the interpreter that packages.
PYTHON ?= $(shell for c in python3.13 $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.13*/bin/python3.13 \
	/usr/local/bin/python3.13 /usr/bin/python3.13; do \
	"$$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' >/dev/null 2>&1 && { echo "$$c"; break; }; done)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint lint-package bench serve package vendor clean soak interleavings

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -n "$(PYTHON)" || { echo "tierlift needs Python 3.13 (the Lambda runtime it deploys on): install it"; \
	  echo "(apt-get install python3.13, or pyenv install 3.13), or run make PYTHON=/path/to/python3.13"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' || { \
	  echo "$(PYTHON) is not Python 3.13; tierlift packages for the python3.13 Lambda runtime"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade 'pip<26.3'  # chalice 1.34 pins pip<26.3
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .  # the `tierlift` command
	touch $(STAMP)

demo: $(STAMP)  ## the local demo: the whole pipeline on an embedded AWS
	$(BIN)/python -m tierlift demo

test: $(STAMP)  ## lint, types, template lint, then the test suite
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/cfn-lint chalicelib/templates/*.yaml templates/common.yaml templates/tenant.yaml templates/cell.yaml
	$(MAKE) --no-print-directory lint-package
	test -x build/checkov/bin/checkov || { $(PYTHON) -m venv build/checkov && build/checkov/bin/pip install -q -r requirements-checkov.txt; }; BC_SKIP_MAPPING=TRUE build/checkov/bin/checkov --skip-download --quiet --compact --framework cloudformation $(foreach f,templates/common.yaml templates/tenant.yaml templates/cell.yaml chalicelib/templates/database.yaml build/lint/dev/sam.json build/lint/prod/sam.json,-f $(f))  # zero failed checks; skips: docs/security.md
	$(BIN)/python -m pytest -q -n 2

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/ruff format --check .
	$(BIN)/cfn-lint chalicelib/templates/*.yaml templates/common.yaml templates/tenant.yaml templates/cell.yaml

bench: $(STAMP)
	$(BIN)/python bench/sweep.py

soak: $(STAMP)  ## the long soak: 1,000 promotions, every fault, 4 in flight (SEED=n to vary)
	$(BIN)/python -m tierlift soak --tenants 20 --promotions 1000 --faults all --concurrency 4 --seed $${SEED:-1} --settle 600

interleavings: $(STAMP)  ## every schedule with up to 2 preemptions of the racing scenarios (slow: minutes)
	TIERLIFT_INTERLEAVING_BOUND=2 TIERLIFT_INTERLEAVING_LIMIT=0 $(BIN)/python -m pytest -q -s -n 2 tests/test_interleavings.py

serve: $(STAMP)
	$(BIN)/python -m tierlift local serve

vendor: $(STAMP)  ## Powertools + aws-xray-sdk without botocore, pruned, as bytecode (scripts/vendor.py)
	$(BIN)/python scripts/vendor.py --target vendor

package: vendor  ## the deployment package and SAM template, in ./build (STAGE=dev|prod)
	$(BIN)/python -m tierlift.package merge $${STAGE:-dev} --out build/merge-$${STAGE:-dev}.json
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} $(BIN)/chalice package --stage $${STAGE:-dev} \
	  --merge-template build/merge-$${STAGE:-dev}.json build
	@ls -l build/deployment.zip
	@test $$(stat -c %s build/deployment.zip) -le 1572864 || { echo "build/deployment.zip is over 1.5 MB"; exit 1; }

lint-package: vendor  ## package BOTH stages, then cfn-lint and the SAM translator on the packaged templates
	for s in dev prod; do \
	  $(BIN)/python -m tierlift.package merge $$s --out build/lint/merge-$$s.json >/dev/null && \
	  AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} $(BIN)/chalice package --stage $$s \
	    --merge-template build/lint/merge-$$s.json build/lint/$$s >/dev/null || exit 1; \
	  test $$(stat -c %s build/lint/$$s/deployment.zip) -le 1572864 || { echo "$$s zip over 1.5 MB"; exit 1; }; \
	done
	$(BIN)/cfn-lint build/lint/dev/sam.json build/lint/prod/sam.json
	$(BIN)/python -m tierlift.package sam-check build/lint/dev/sam.json build/lint/prod/sam.json
	$(BIN)/python -m tierlift.policies check

clean:
	rm -rf $(VENV) build vendor .pytest_cache .ruff_cache
