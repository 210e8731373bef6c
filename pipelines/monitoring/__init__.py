"""Knowing whether predictions were right: late labels, continued evaluation, alerts, the report."""
