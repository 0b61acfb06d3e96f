"""Load generators for Mnemo's HTTP API (see docs/OPERATIONS.md "Load tests")."""
