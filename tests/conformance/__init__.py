"""One conformance suite for every store backend: see ``backends.py`` for the list and the
factory interface, ``conftest.py`` for the fixtures."""
