"""HF <-> Flax conversion and orbax save/restore onto a mesh."""
