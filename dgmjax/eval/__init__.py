"""Estimators that score a trained model over a whole data split.

Likelihood bounds (IWAE, importance sampling, exact grids), the ELBO-surgery
report, code-usage summaries. Pure JAX over a model's methods; no trainer
imports.
"""
