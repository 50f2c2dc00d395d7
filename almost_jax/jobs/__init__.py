"""Command-line jobs: `python -m almost_jax.jobs.<job> --config=configs/<...>.py --config.key=value`."""
