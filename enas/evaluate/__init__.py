"""Measuring a search: rank correlations, published tables, search against random search.

``stats`` holds the statistics (Kendall tau-b with its standard error, Spearman rho,
percentiles); ``table`` reads a published table of stand-alone accuracies (such as
NAS-Bench-201's); ``against_table`` measures a search run on one (``enas table``).
"""
