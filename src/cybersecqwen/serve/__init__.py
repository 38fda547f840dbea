"""The local API server, its structured CTI service, batch enrichment and the analyst page."""
