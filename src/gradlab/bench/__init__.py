"""Benchmarks that ship with the package (``gradlab bench optim``), so they run from an
installed wheel in any directory. They sit beside the CLI: they call the backend's entry
points and nothing above the backend imports them."""
