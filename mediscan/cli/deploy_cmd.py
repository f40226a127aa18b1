"""Deploying a run: `mediscan export` (ONNX) and `mediscan serve` (REST API and web page)."""

from __future__ import annotations

from typing import Annotated

import typer

from mediscan.cli.common import (
    TOKEN_ENV,
    Device,
    JsonOut,
    Run,
    check_positive,
    check_probability,
    check_token,
    emit_json,
    is_loopback,
    user_errors,
)
from mediscan.progress import console


def export(
    run: Run,
    onnx: Annotated[bool, typer.Option("--onnx", help="Write RUN/model.onnx (parity-checked).")]
    = False,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    json_out: JsonOut = False,
) -> None:
    """Export the model for deployment; checks that it agrees with PyTorch."""
    from mediscan.export import export_onnx
    from mediscan.onnx_backend import OnnxBackend

    if not onnx:
        console.print("[red]error:[/red] choose a format: --onnx")
        raise typer.Exit(2)
    with user_errors():
        path = export_onnx(run, opset=opset)
    check = OnnxBackend(path).metadata["parity"]
    if json_out:
        emit_json({"onnx": str(path), "bytes": path.stat().st_size, "parity": check})
    else:
        console.print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB); parity on "
                      f"{check['images']} images: max |prob diff| {check['max_abs_prob_diff']:.2e}, "
                      f"same classes: {check['same_argmax']}", highlight=False)


def serve(
    run: Run,
    host: Annotated[str, typer.Option(
        help="Interface to listen on; 0.0.0.0 exposes the server to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port (1..65535).")] = 8000,
    token: Annotated[str | None, typer.Option(
        envvar=TOKEN_ENV, callback=check_token,
        help="Require 'Authorization: Bearer TOKEN' on /api/* (an empty token is refused).")] = None,
    max_upload_mb: Annotated[float, typer.Option(
        callback=check_positive, help="Largest upload accepted, in MiB (> 0).")] = 10,
    abstain_below: Annotated[float | None, typer.Option(
        callback=check_probability, metavar="P",
        help="Mark predictions whose top probability is below P (0 <= P < 1) as uncertain.")] = None,
    device: Device = None,
) -> None:
    """REST API and web page on http://HOST:PORT (see /openapi.json)."""
    import uvicorn

    from mediscan.predict import Classifier
    from mediscan.serve.app import create_app

    with user_errors():
        classifier = Classifier.load(run, device=device, abstain_below=abstain_below)
        app = create_app(classifier, token=token, run_dir=run,
                         max_upload_bytes=int(max_upload_mb * 2**20))
    if token is None and not is_loopback(host):
        console.print(f"[yellow]warning:[/yellow] serving on {host} without a token: anyone who can "
                      f"reach this machine can use the API; set --token or {TOKEN_ENV}", highlight=False)
    console.print(f"serving {run} on http://{host}:{port}  (not a medical device)", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def register(app: typer.Typer) -> None:
    for command in (export, serve):
        app.command()(command)
