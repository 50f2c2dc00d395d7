from almost_jax.pipeline.runner import cli

cli()
