"""Default run folders: a new one per training, even for two started in the same second."""

from typer.testing import CliRunner

from mediscan.cli import app as cli
from mediscan.run_folder import new_run_folder


def test_two_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    monkeypatch.setattr("time.strftime", lambda _format: "20261206-130240")
    first, second, third = (new_run_folder("medmnist-x-", parent=tmp_path / "runs") for _ in range(3))
    assert [p.name for p in (first, second, third)] == [
        "medmnist-x-20261206-130240", "medmnist-x-20261206-130240-2", "medmnist-x-20261206-130240-3"]
    assert all(p.is_dir() for p in (first, second, third))


def test_an_existing_folder_is_never_reused(tmp_path, monkeypatch):
    monkeypatch.setattr("time.strftime", lambda _format: "20261206-130240")
    (tmp_path / "20261206-130240").mkdir()
    (tmp_path / "20261206-130240" / "model.json").write_text("{}")
    assert new_run_folder(parent=tmp_path).name == "20261206-130240-2"


def test_train_under_torchrun_without_out_asks_for_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["train", str(tmp_path), "--epochs", "1"],
                                env={"WORLD_SIZE": "2", "RANK": "0"})
    assert result.exit_code == 2, result.output
    assert "pass --out RUN" in " ".join(result.output.replace("│", " ").split())
    assert not (tmp_path / "runs").exists()
