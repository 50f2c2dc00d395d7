"""Expert iteration on the mini world: best-of-16 of the SFT (RM) policy on the RL prompts, picked
by the RM, then the mini SFT recipe from that same start; two rounds. The same job as the
pipeline's optional `expert_iteration` stage (block `expert_iteration` of configs/mini.py).

    python -m almost_jax.jobs.expert_iteration --config=configs/mini/expert_iteration.py [--config.iterations=1]
"""
from pathlib import Path

from almost_jax.config_lib import load_config_file
from almost_jax.pipeline import job_configs


def get_config():
    mini = load_config_file(Path(__file__).resolve().parents[1] / "mini.py")
    return job_configs.expert_iteration_job(mini, Path(mini.workdir) / "expert_iteration")
