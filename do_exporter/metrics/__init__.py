"""The metric side: the contract (one declaration per family) and the builders that turn
snapshots and analytics state into families. Imports no HTTP client."""
