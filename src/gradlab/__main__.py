"""``python -m gradlab`` runs the ``gradlab`` command."""
import sys

from gradlab.cli.main import main

# Guarded: mpi4py.futures workers import the main module (`mpiexec ... python -m
# mpi4py.futures -m gradlab search --executor mpi`) and must not run the command themselves.
if __name__ == "__main__":
    sys.exit(main())
