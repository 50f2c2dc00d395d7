"""One small module per training objective: a loss function plus a batch builder."""
