"""How a run lives on disk: every file's name and schema (runfolder.py), and the
bounded, link-refusing readers of a run's files (metrics.py)."""
