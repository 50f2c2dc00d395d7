"""Train state, optimizer, the jitted step and the one loop every learner shares."""
