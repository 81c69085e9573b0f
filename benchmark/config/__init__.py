"""Suite configuration: frozen pydantic dataclasses built from YAML (packaged presets or files) with dotted overrides,
validated on load (one-line errors naming the field), and the config hash of a cell."""

from benchmark.config.fields import FieldError, build
from benchmark.config.records import comparison_key, config_hash, to_dict
from benchmark.config.suite import (
    AUTOATTACK_VERSIONS,
    OBJECTIVES,
    STRUCTURES,
    Cell,
    DataConfig,
    DenseConfig,
    EvalConfig,
    MethodConfig,
    PhaseConfig,
    SuiteConfig,
    ThreatConfig,
    apply_overrides,
    identity_dict,
    load_suite,
    packaged_suites,
    read_suite_mapping,
    select_methods,
)
from benchmark.errors import ConfigError

__all__ = [
    "AUTOATTACK_VERSIONS", "Cell", "ConfigError", "DataConfig", "DenseConfig", "EvalConfig", "FieldError",
    "MethodConfig", "OBJECTIVES", "PhaseConfig", "STRUCTURES", "SuiteConfig", "ThreatConfig",
    "apply_overrides", "build", "comparison_key", "config_hash", "identity_dict", "load_suite", "packaged_suites",
    "read_suite_mapping", "select_methods", "to_dict",
]
