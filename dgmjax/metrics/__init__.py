"""Evaluation metrics for generative models."""

from dgmjax.metrics.evaluate import evaluate_samples

__all__ = ["evaluate_samples"]
