"""Cluster specs (YAML) → one job definition + one run per node: oracle-ads' import path.

The code lives in :mod:`fsm_cluster.spec` (reading, fields, models, images, builders, kinds,
loading, converter; its docstring is the map). This module re-exports its public names, so that
``from fsm_cluster.jobspec import ClusterConfigToJobSpecConverter, AbstractFrameworkSpecBuilder,
update_env_vars`` (oracle-ads users) and ``load_spec``, ``node_environments``, ... keep working.
"""

from __future__ import annotations

from .registry import known_cluster_kinds
from .spec.builders import AbstractFrameworkSpecBuilder, SpecFieldError, update_env_vars
from .spec.converter import (ClusterConfigToJobSpecConverter, NodePlan, ads_job_def_info, certificate_env,
                             entry_args, entry_kwargs, node_environments)
from .spec.fields import ArgList, Kwargs, RestartPolicy, Scalar, ScalarList, Unset, WholeNumber
from .spec.images import (ADS_INI, ADS_INI_KEYS, ADS_INI_SECTION, IMAGE_PATH, ImageChoice, ImageUnresolved,
                          image_from_ini)
from .spec.kinds import FrameworkSpecBuilderFactory
from .spec.loading import load_spec, load_spec_text, semantic_problems, validate_spec
from .spec.models import (ENV_VAR_NAME, MODES, RUN_WIDE, CaCert, Cert, Certificate, ClusterBody, ClusterSection,
                          ClusterSpec, DistributedSpec, EnvVar, GroupConfig, InfraSpec, Infrastructure,
                          NodeGroup, Runtime, RuntimeSpec, RuntimeType, ShapeConfig, env_dict, format_errors,
                          json_schema, spec_problems)
from .spec.reading import (MAX_SPEC_BYTES, MAX_SPEC_VALUES, MAX_WARNINGS, Path, SpecExpansionError, SpecSource,
                           Warn, format_path, parse_yaml, read_text, resolve_placeholders, tell)

__all__ = [
    # oracle-ads' names
    "ClusterConfigToJobSpecConverter", "AbstractFrameworkSpecBuilder", "update_env_vars",
    # reading
    "Path", "Warn", "SpecSource", "format_path", "MAX_SPEC_BYTES", "MAX_SPEC_VALUES", "SpecExpansionError",
    "MAX_WARNINGS", "tell", "read_text", "parse_yaml", "resolve_placeholders",
    # fields and models
    "Scalar", "ScalarList", "ArgList", "Kwargs", "RestartPolicy", "WholeNumber", "Unset",
    "MODES", "ENV_VAR_NAME", "RUN_WIDE", "EnvVar", "env_dict", "GroupConfig", "NodeGroup", "CaCert", "Cert",
    "Certificate", "ClusterBody", "ClusterSection", "ShapeConfig", "InfraSpec", "Infrastructure", "RuntimeType",
    "RuntimeSpec", "Runtime", "DistributedSpec", "ClusterSpec", "json_schema", "format_errors", "spec_problems",
    # images
    "IMAGE_PATH", "ADS_INI", "ADS_INI_SECTION", "ADS_INI_KEYS", "ImageUnresolved", "image_from_ini", "ImageChoice",
    # loading
    "load_spec", "load_spec_text", "validate_spec", "semantic_problems",
    # builders and kinds
    "SpecFieldError", "FrameworkSpecBuilderFactory", "known_cluster_kinds",
    # converter
    "certificate_env", "ads_job_def_info", "entry_args", "entry_kwargs", "NodePlan", "node_environments",
]
