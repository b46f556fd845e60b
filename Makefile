.PHONY: up down test lint bench

up:
	@bash scripts/up.sh

down:
	@bash scripts/down.sh

test:
	@bash scripts/test.sh

lint:
	@.venv/bin/ruff check .
