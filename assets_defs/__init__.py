"""The Dagster layer of salmon: one module per pipeline stage, wired to salmon_dag functions."""

import warnings

import dagster as dg

# We use a few beta APIs on purpose (multi observable sources, AssetSelection include_sources);
# their warnings would drown the CLI output.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
