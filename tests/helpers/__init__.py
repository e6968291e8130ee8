"""Helpers shared by the tests (tests/ is on sys.path): no test file imports another."""
