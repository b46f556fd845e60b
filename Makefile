.PHONY: up down test cluster-test lint loadtest soak

up:
	@bash scripts/up.sh

down:
	@bash scripts/down.sh

test:
	@bash scripts/test.sh

cluster-test:
	@bash scripts/cluster-test.sh $(ARGS)

lint:
	@.venv/bin/ruff check .

loadtest:
	@bash scripts/loadtest.sh loadtest $(ARGS)

soak:
	@MINUTES=$(or $(MINUTES),30) bash scripts/loadtest.sh soak $(ARGS)
