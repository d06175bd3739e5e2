"""Measuring a search: rank correlations, published tables, your own ground truth,
search against random search.

``stats`` holds the statistics (Kendall tau-b with its standard error, Spearman rho,
percentiles); ``table`` reads a published table of stand-alone accuracies (such as
NAS-Bench-201's); ``against_table`` measures a search run on one (``enas table``).
``ground_truth`` is the format of a table of your own, which ``build_truth`` trains
(``enas ground-truth``) and ``compare`` measures searches against (``enas compare``);
``beat_chance`` runs ENAS and random search against it (``enas beat-chance``);
``controller_ab`` compares controller options on one supernet (``enas controller-ab``);
``reward_noise`` measures the image reward's BN modes (``enas reward-noise``). Each
command module exposes ``add_arguments(parser)`` and ``run(args)``; enas/cli.py wires them.
"""
