"""Flax modules shared by the trainers."""
