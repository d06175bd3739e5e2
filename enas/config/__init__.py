"""Configs: the loader (enas/config/loader.py: strict YAML, ``base:``, ``--set``, checks,
a frozen object, dump) and the settings (enas/config/schema.py, schema_retrain.py;
docs/config.md is generated from them by ``python -m enas.config.docs``)."""
from enas.errors import ConfigError
from enas.config.checks import MAX_SEED
from enas.config.loader import (MAX_INT, MODULE_KEYS, apply_overrides, dump, from_dict, is_module_path, load, load_retrain,
                     load_search, read_config, read_yaml, to_dict)
from enas.config.moved import upgrade_run_config
from enas.config.schema import (MAX_SAMPLES, TASK_OF_DATASET, ControllerSection, DataSection, ImageSearchSection,
                     LMSearchSection, OptimSection, PerKind, ScoreSection, SearchConfig, SearchSection, SpaceSection)
from enas.config.schema_retrain import RetrainConfig, RetrainSection

__all__ = ["ConfigError", "MAX_INT", "MAX_SAMPLES", "MAX_SEED", "MODULE_KEYS", "TASK_OF_DATASET",
           "ControllerSection", "DataSection", "ImageSearchSection", "LMSearchSection", "OptimSection", "PerKind",
           "RetrainConfig", "RetrainSection", "ScoreSection", "SearchConfig", "SearchSection", "SpaceSection",
           "apply_overrides", "dump", "from_dict", "is_module_path", "load", "load_retrain", "load_search",
           "read_config", "read_yaml", "to_dict", "upgrade_run_config"]
