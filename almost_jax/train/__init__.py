"""Train state, optimizer, the state builder (setup.py), the jitted step and the one loop every learner shares."""
