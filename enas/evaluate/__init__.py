"""Measuring a search: rank correlations, published tables, your own ground truth.

``stats`` holds the statistics (Kendall tau-b with its standard error, Spearman rho,
percentiles); ``table`` reads a published table of stand-alone accuracies (such as
NAS-Bench-201's); ``against_table`` measures a search run on one (``enas table``).
``ground_truth`` is the format of a table of your own, which ``build_truth`` trains
(``enas ground-truth``) and ``compare`` measures searches against (``enas compare``);
each of those two command modules exposes ``add_arguments(parser)`` and ``run(args)``,
which enas/cli.py lists with the other commands. One-off studies built on these pieces
are scripts in benchmarks/studies/. (``enas evaluate``, which tests a retrained model
again, is enas/child/retest.py.)
"""
