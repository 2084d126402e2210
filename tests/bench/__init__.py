"""The benchmark (`python -m tests.bench --help`): not a test, it prints figures and draws charts."""
