"""The `mediscan` command line: one thin sub-command per verb over the library."""

from __future__ import annotations

import typer

from mediscan.cli import deploy_cmd, evaluate_cmd, inspect_cmd, predict_cmd, train_cmd

app = typer.Typer(
    name="mediscan", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Build, evaluate, explain and deploy medical image classifiers you can trust.",
)
for module in (train_cmd, evaluate_cmd, predict_cmd, deploy_cmd, inspect_cmd):
    module.register(app)
