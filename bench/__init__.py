"""Benchmarks, the load test and soak, the local test site and the stand-in model: dev only.

Not in the product's INSTALLED_APPS: its commands run with `--settings=bench.settings` (the
product's settings plus this app), and the test suite runs with those settings too. The product
never imports this package.
"""
