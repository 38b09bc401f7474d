"""Evaluation: metrics and the human preference study."""
