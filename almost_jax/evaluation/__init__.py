"""Evaluation: reward-model accuracy, policy scores under the oracle, win-rates, reports."""
