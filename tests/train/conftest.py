"""The corpus fixtures (hand-written source files) serve the training tests too."""

from tests.corpus.conftest import recipe_file, source_mirror  # noqa: F401
