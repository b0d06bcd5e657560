"""The Dagster layer of salmon: one module per pipeline stage, wired to salmon_dag functions, and
the ``salmon`` command line (``assets_defs.cli``).

Nothing is imported here, so ``salmon sql`` does not pay for importing Dagster.
"""
