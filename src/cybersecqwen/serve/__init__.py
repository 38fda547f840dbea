"""The local API server: app.py builds the app; routes.py the OpenAI, CTI and operations routers; gate.py owns the
model lock, queue and timeout; service.py the structured CTI jobs; catalog.py the catalog index; enrich.py batch
enrichment; server.py starts it. To add an endpoint, see docs/architecture.md.
"""
