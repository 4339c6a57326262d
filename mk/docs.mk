# The documentation site (docs/, mkdocs.yml; extra `docs`: mkdocs-material):
#   make docs         build it into site/ (`mkdocs build --strict`: a broken link or a stale page fails)
#   make docs-serve   serve it at http://127.0.0.1:8000 while editing
# The command reference is generated from the parsers at build time (docs/hooks.py).
.PHONY: docs docs-serve
docs: deps
	$(PY) -m mkdocs build --strict --site-dir site

docs-serve: deps
	$(PY) -m mkdocs serve
