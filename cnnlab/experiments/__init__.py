"""Experiments that measure the literature's claims: one module per experiment, each defining
one `Experiment` (see `cnnlab.experiments.base` for the protocol and the report folder).

    >>> import cnnlab
    >>> report = cnnlab.run_experiment("claims", profile="quick", out="runs/claims")
    >>> report.verdict, report.report_md
"""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path

from cnnlab.experiments.base import Experiment, Findings, Plot, Report, SubRun, UnknownExperiment

# experiment name -> module under cnnlab.experiments (imported on first use: torch-heavy)
_MODULES = {
    "claims": "claims",
    "receptive-field": "receptive_field",
    "bottleneck": "bottleneck",
    "zoo": "zoo",
    "scaling": "scaling",
    "two-towers": "two_towers",
    "alexnet-tricks": "alexnet_tricks",
    "augmentation": "augmentation",
    "dropout": "dropout",
    "activation": "activation",
    "vanishing-gradients": "vanishing_gradients",
    "initialization": "initialization",
    "batchnorm": "batchnorm",
    "minibatch": "minibatch",
    "auxiliary": "auxiliary",
    "degradation": "degradation",
    "preactivation": "preactivation",
}


def list_experiments() -> list[str]:
    return list(_MODULES)


def get_experiment(name: str) -> Experiment:
    if name not in _MODULES:
        close = difflib.get_close_matches(name, list(_MODULES), n=2)
        raise UnknownExperiment(name, list(_MODULES), close)
    return importlib.import_module(f"cnnlab.experiments.{_MODULES[name]}").EXPERIMENT


def describe_experiments() -> list[dict]:
    """name, claim, source and profiles of every experiment (`cnnlab experiment list --json`)."""
    out = []
    for name in _MODULES:
        exp = get_experiment(name)
        out.append({"name": name, "claim": exp.claim, "source": exp.source,
                    "profiles": [p for p in exp.profiles if p != "test"]})
    return out


def run_experiment(name: str, profile: str = "quick", out: str | Path | None = None,
                   seed: int = 0, progress=None, device: str | None = None) -> Report:
    """Run one experiment (continuing a kept, interrupted run in `out`) and write its report
    folder (default runs/experiments/NAME-PROFILE). `progress(text)` receives the one progress
    line; `device` defaults to CUDA when present."""
    from cnnlab.experiments import base

    return base.run(get_experiment(name), profile, out, seed, progress, device)


__all__ = ["Experiment", "Findings", "Plot", "Report", "SubRun", "UnknownExperiment",
           "describe_experiments", "get_experiment", "list_experiments", "run_experiment"]
