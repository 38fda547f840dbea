"""The answering core, below the HTTP layer: the structured CTI jobs over a shared candidates-and-fusion core.

- `service.py`: the core (`CtiService`: model access, catalog candidates, the three answerers' features, fusion) and
  `Fusion` (learned weights per job);
- one module per job: `cwe.py` (CWE ranking), `cvss.py` (CVE -> CWE + CVSS), `attack.py` (ATT&CK extraction), `qa.py`
  (questions: open-book over the knowledge index, or the model), `advisory.py` (whole documents), `enrich.py` (batches);
- `catalog.py` (the catalogs the jobs answer from), `affected.py` (vendor/product gazetteer), `fuse.py` (learning the
  fusion weights), `loading.py` (backend + catalogs + heads + knowledge index -> a service), `deadline.py` (a job's
  request deadline, which the HTTP gate sets and every job checks).

Nothing here imports the HTTP package (`serve/`), which only adds routes, schemas, limits and the page.
"""
