"""The replication report: result manifests of the analyses -> one HTML page and ``metrics.json``."""
