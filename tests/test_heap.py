"""The C heap setting for CPU training and PyTorch inference: freed activation-sized blocks are reused instead of
faulted in again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers_bundles import minimal_meta

from mediscan.bundle import save_bundle
from mediscan.heap import keep_freed_memory
from mediscan.models import create_model

PROGRAM = """
import json, resource, sys, torch
from mediscan.heap import keep_freed_memory
from mediscan.predict import Classifier
mode = sys.argv[1]
applied = keep_freed_memory() if mode == "keep" else False
if mode.startswith("classifier="):
    Classifier.load(mode.split("=", 1)[1], device="cpu")
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    block = torch.empty(64 << 20, dtype=torch.uint8)
    block.fill_(1)
    del block
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _block_pages() -> int:
    """Pages in PROGRAM's 40 blocks of 64 MiB."""
    return 40 * (64 << 20) // os.sysconf("SC_PAGE_SIZE")


def _faults(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_freed_blocks_are_reused_not_faulted_in_again():
    plain, kept = _faults("plain"), _faults("keep")
    assert kept["applied"] is True
    pages = _block_pages()
    assert plain["faults"] > 0.8 * pages  # every 64 MiB block comes fresh from the kernel
    assert kept["faults"] < 0.3 * pages  # a few blocks' pages until the heap settles, then reuse


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_a_classifier_on_the_cpu_keeps_freed_memory(tmp_path):
    save_bundle(tmp_path, create_model("seed_cnn", 2), minimal_meta("seed_cnn", ["a", "b"], 32))
    loaded = _faults(f"classifier={tmp_path}")
    assert loaded["faults"] < 0.3 * _block_pages()


def test_a_users_own_malloc_setting_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")
    assert keep_freed_memory() is False
