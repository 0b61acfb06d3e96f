"""Load generators for Mnemo's HTTP API (see README section "Load tests")."""
