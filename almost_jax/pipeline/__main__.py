from almost_jax.pipeline.runner import cli

if __name__ == "__main__":
    cli()
