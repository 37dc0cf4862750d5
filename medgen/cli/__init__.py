"""Command-line interface (see `medgen.cli.main`)."""
