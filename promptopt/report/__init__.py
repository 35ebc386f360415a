"""Printing and rendering of plans, results and runs."""
