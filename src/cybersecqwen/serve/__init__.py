"""The local API server: app.py builds the app; routers in openai_api.py, cti_api.py, ops_api.py; gate.py owns the
model lock, queue and timeout; service.py the structured CTI jobs; catalog.py the catalog index; enrich.py batch
enrichment; server.py starts it. To add an endpoint, see docs/architecture.md.
"""
