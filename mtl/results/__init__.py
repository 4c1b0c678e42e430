"""A finished study's results: front, selection, ensembles, statistics tables, reports, plots."""
