"""The ``gradlab`` command line (see ``gradlab.cli.main``)."""
