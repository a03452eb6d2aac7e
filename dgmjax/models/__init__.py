"""Whole generative models, built from :mod:`dgmjax.nn` layers and :mod:`dgmjax.losses`.

One module per model family. A model here is what a trainer wires to data and
an optimizer, and what an evaluator in :mod:`dgmjax.eval` scores; nothing here
imports the trainers.
"""
