"""CLI options and inputs: bad values are usage errors with a message (exit 2, no traceback); empty
tokens never turn auth off; predict names what it skips and exits 1; Ctrl-C in train exits 130."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers_images import write_image
from test_export import make_run
from typer.testing import CliRunner

from mediscan.cli import app as cli
from mediscan.cli.common import is_loopback


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs") / "tiny")


@pytest.fixture
def served(monkeypatch):
    """uvicorn.run replaced: the app and options `serve` would have started."""
    started = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: started.update(app=app, **kw))
    monkeypatch.delenv("MEDISCAN_TOKEN", raising=False)
    return started


def invoke(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def text(result) -> str:
    """The output as one line: Rich's line wrapping and error-panel borders removed."""
    return " ".join(result.output.replace("│", " ").split())


@pytest.mark.parametrize("option,value,message", [
    ("--token", "", "the token is empty"),
    ("--token", "   ", "the token is empty"),
    ("--abstain-below", "2", "must lie in [0, 1)"),
    ("--abstain-below", "nan", "must lie in [0, 1)"),
    ("--max-upload-mb", "-1", "must be a number > 0"),
    ("--max-upload-mb", "0", "must be a number > 0"),
    ("--max-upload-mb", "nan", "must be a number > 0"),
    ("--port", "99999", "less than or equal to 65535"),
    ("--port", "0", "greater than or equal to 1"),
])
def test_serve_refuses_bad_options(run, served, option, value, message):
    result = invoke("serve", run, option, value)
    assert result.exit_code == 2, result.output
    assert message in text(result) and "Traceback" not in result.output
    assert not served  # the server never started


def test_empty_token_environment_variable_is_refused(run, served):
    result = invoke("serve", run, env={"MEDISCAN_TOKEN": ""})
    assert result.exit_code == 2 and "MEDISCAN_TOKEN is set but empty" in text(result)
    assert not served


def test_network_host_without_token_warns(run, served):
    result = invoke("serve", run, "--host", "0.0.0.0")
    assert result.exit_code == 0, result.output
    assert "warning: serving on 0.0.0.0 without a token" in text(result)
    assert served["host"] == "0.0.0.0"
    quiet = invoke("serve", run, "--host", "0.0.0.0", "--token", "s3cret")
    assert quiet.exit_code == 0 and "warning" not in quiet.output
    assert "warning" not in invoke("serve", run).output  # loopback by default


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True),
                                           ("localhost", True), ("0.0.0.0", False),
                                           ("192.168.1.4", False), ("example.org", False)])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "a\\b", ".hidden", ""])
def test_evaluate_refuses_names_that_are_paths(run, tmp_path, name):
    result = invoke("evaluate", run, tmp_path, "--name", name)
    assert result.exit_code == 2 and "is not a plain name" in text(result)
    assert not (run / "evaluations").exists() and not (run.parent / "x.json").exists()


@pytest.mark.parametrize("value", ["1.5", "nan", "-0.1"])
def test_predict_refuses_bad_abstain_threshold(run, tmp_path, value):
    result = invoke("predict", run, tmp_path, "--abstain-below", value)
    assert result.exit_code == 2 and "must lie in [0, 1)" in text(result)


@pytest.mark.parametrize("option", ["--lesions", "--dropout", "--drop-path"])
@pytest.mark.parametrize("value", ["1.5", "nan", "-0.1"])
def test_train_refuses_a_share_outside_0_1(tmp_path, option, value):
    result = invoke("train", tmp_path, option, value)
    assert result.exit_code == 2 and "must be a share between 0 and 1" in text(result)


def test_train_refuses_an_unknown_augmentation_and_lists_the_presets(tmp_path):
    result = invoke("train", tmp_path, "--augment", "wild")
    assert result.exit_code == 2 and "unknown augmentation preset 'wild'" in text(result)
    assert "mri-contrast" in text(result)


def test_augment_and_dropout_options_reach_the_trainer(tmp_path, monkeypatch):
    given = {}

    def record(*args, **kwargs):
        given.update(kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr("mediscan.training.trainer.train", record)
    invoke("train", tmp_path / "data", "--out", tmp_path / "run", "--augment", "mri-contrast", "--dropout", "0.3",
           "--drop-path", "0")
    assert (given["augment"], given["dropout"], given["drop_path"]) == ("mri-contrast", 0.3, 0.0)


def test_resume_without_out_is_a_usage_error(tmp_path):
    result = invoke("train", tmp_path, "--resume")
    assert result.exit_code == 2 and "--resume needs --out RUN" in text(result)


@pytest.mark.parametrize("value,message",
                         [("96", "START_PX,UNTIL"), ("8,0.5", ">= 16 px"), ("96,1.5", "share in")])
def test_train_refuses_a_bad_progressive_schedule(tmp_path, value, message):
    result = invoke("train", tmp_path, "--progressive", value)
    assert result.exit_code == 2 and message in text(result)


def test_progressive_option_reaches_the_recipe():
    from mediscan.cli.common import parse_progressive
    from mediscan.training.trainer import resolve_recipe

    assert resolve_recipe("cpu", progressive=parse_progressive("96,0.7")).progressive == (96, 0.7)
    assert resolve_recipe("cpu", progressive=parse_progressive("off")).progressive == (0, 0.0)


@pytest.fixture
def odd_folder(tmp_path):
    """Two good PNGs, a FIFO, a symbolic link loop and a dangling link."""
    folder = tmp_path / "scans"
    for name in ("a.png", "b.png"):
        write_image(folder / name, "L", (40, 40))
    os.mkfifo(folder / "pipe.png")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    (folder / "gone.png").symlink_to(folder / "missing.png")
    return folder


def test_predict_names_what_it_skips_and_exits_1(run, odd_folder):
    result = invoke("predict", run, odd_folder, "--json")
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert sorted(os.path.basename(p["source"]) for p in payload["predictions"]) == ["a.png", "b.png"]
    reasons = {os.path.basename(f["path"]): f["reason"] for f in payload["failures"]}
    assert set(reasons) == {"pipe.png", "loop.png", "gone.png"}
    assert "FIFO" in reasons["pipe.png"] and "loop" in reasons["loop.png"]
    assert "dangling" in reasons["gone.png"] and "missing.png" in reasons["gone.png"]


def test_predict_never_opens_a_fifo_given_by_name(run, odd_folder):
    # A subprocess with a timeout: a reader that opened the FIFO would block until killed.
    done = subprocess.run([sys.executable, "-m", "mediscan", "predict", str(run),
                           str(odd_folder / "pipe.png"), str(odd_folder / "a.png")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "pipe.png: is a FIFO (named pipe), not an image file" in " ".join(done.stderr.split())
    assert "a.png" in done.stderr and "1 input(s) skipped, 1 predicted" in done.stderr


def test_predict_exits_0_when_everything_was_predicted(run, odd_folder):
    result = invoke("predict", run, odd_folder / "a.png", odd_folder / "b.png")
    assert result.exit_code == 0, result.output


def test_ctrl_c_in_train_exits_130_with_the_resume_command(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("mediscan.training.trainer.train", interrupted)
    result = invoke("train", tmp_path / "data", "--out", tmp_path / "run")
    assert result.exit_code == 130
    expected = f"resume with: mediscan train {tmp_path / 'data'} --out {tmp_path / 'run'} --resume"
    assert expected in text(result)


def test_ctrl_c_without_out_names_the_default_run_folder(tmp_path, monkeypatch):
    monkeypatch.setattr("mediscan.training.trainer.train",
                        lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    monkeypatch.chdir(tmp_path)
    result = invoke("train", "data")
    assert result.exit_code == 130 and "--out runs/" in text(result) and "--resume" in text(result)


def wait_for(path, child: subprocess.Popen, seconds: float) -> None:
    """Until PATH exists; fails if the child exits first or SECONDS pass (generous: a loaded machine)."""
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert child.poll() is None, f"exited {child.returncode} before writing {path.name}"
        assert time.monotonic() < deadline, f"no {path.name} after {seconds:.0f} s"
        time.sleep(0.2)


def _default_sigint() -> None:
    """Ctrl-C as in a terminal, even when the suite itself runs as a background job (which ignores it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_sigint_during_real_training_exits_130(tmp_path):
    from helpers_images import make_class_folder

    data = make_class_folder(tmp_path / "data", ["a", "b"], 40, size=(48, 48))
    child = subprocess.Popen([sys.executable, "-m", "mediscan", "train", str(data), "--recipe",
                              "tutorial-cnn", "--epochs", "200", "--out", str(tmp_path / "run"),
                              "--device", "cpu", "--no-progress"], stderr=subprocess.PIPE, text=True,
                             preexec_fn=_default_sigint)
    try:
        wait_for(tmp_path / "run" / "history.csv", child, 600)  # one epoch done: inside the epoch loop
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=300)
    finally:
        child.kill()
    assert child.returncode == 130, stderr[-2000:]
    assert "--resume" in stderr and "Traceback" not in stderr
