"""How a `--time-budget` is spent: the whole command (decoding, training, calibration,
evaluation, report) ends within the budget, whatever the machine's speed.

The budget starts when `train` is called. Decoding is measured as it happens; finishing (one
more validation pass, the test split, metrics with bootstrap CIs, plots and the report) is
estimated from a measured inference rate and reserved, and training gets what is left, stopping
mid-epoch if it must. The estimate is refined after every validation pass."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import numpy as np

from mediscan.forward import batched_logits, images_per_second, inference_batch_size
from mediscan.onnx_backend import usable_cpus

REPORT_SECONDS = 10.0  # plots, report.html and the bundle (measured: 6-9 s with a few hundred test images)
REPORT_SECONDS_PER_TEST_IMAGE = 0.0008  # 1,000 bootstrap resamples, OOD scores, predictions.csv (47,280: ~38 s)
SAFETY = 0.02  # fraction of the budget kept back for what is not estimated (imports, writes)
TTA_MAX_SHARE = 0.05  # chosen (not asked-for) flip TTA is dropped when its extra passes cost more of the budget
PROBE_IMAGES = 32
PROBE_REPEATS = 2


@dataclass
class TimePlan:
    """Seconds available to the training loop, from a budget and what finishing will cost."""

    budget: float | None
    n_val: int
    n_test: int
    tta: bool = False
    n_ood_fit: int = 0  # training images the OOD statistics are fitted on
    started: float = field(default_factory=time.perf_counter)
    seconds_per_image: float = 0.0  # inference, measured
    test_speedup: float = 1.0  # the test split's inference speed relative to training's network (ONNX Runtime)

    @property
    def deadline(self) -> float | None:
        return None if self.budget is None else self.started + self.budget * (1 - SAFETY)

    def finish_seconds(self) -> float:
        """A last validation pass, the OOD statistics (training sample; with TTA the validation split
        again, mirrored), the test split (twice with TTA) and the report."""
        after_validation = 2 * self._tta_pass_images() if self.tta else self._plain_pass_images()
        passes = self.n_val + after_validation
        return passes * self.seconds_per_image + REPORT_SECONDS + self.n_test * REPORT_SECONDS_PER_TEST_IMAGE

    @property
    def tta_images(self) -> int:
        """Images scored with test-time augmentation when it is on: the OOD fit, validation, the test split."""
        return self.n_ood_fit + self.n_val + self.n_test

    def _tta_pass_images(self) -> float:
        """`tta_images`, each scored twice with TTA, in images of the training network's speed (the test
        split's may be faster)."""
        return self.n_ood_fit + self.n_val + self.n_test / self.test_speedup

    def _plain_pass_images(self) -> float:
        """What finishing scores after the last validation pass without TTA: the OOD threshold reuses
        that pass's features."""
        return self.n_ood_fit + self.n_test / self.test_speedup

    def tta_seconds(self) -> float:
        """What test-time augmentation adds to finishing: every pass after the last validation twice,
        the validation split included."""
        return (2 * self._tta_pass_images() - self._plain_pass_images()) * self.seconds_per_image

    def tta_affordable(self) -> bool:
        """Flip TTA costs at most TTA_MAX_SHARE of the budget (always, without a budget)."""
        return self.budget is None or self.tta_seconds() <= TTA_MAX_SHARE * self.budget

    def training_seconds(self, loop_started: float) -> float | None:
        """Seconds the loop that started at `loop_started` may run (None: no budget)."""
        if self.deadline is None:
            return None
        return max(1.0, self.deadline - loop_started - self.finish_seconds())

    def measure_inference(self, model, images: np.ndarray, *, mean, std, device,
                          test_logits_of: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        """Time a forward pass over a few images (after a warm-up) for the finishing estimate; with
        `test_logits_of` (what the test split will go through, e.g. ONNX Runtime), its relative speed."""
        sample = np.asarray(images[:PROBE_IMAGES])
        if not len(sample):
            return
        rate = images_per_second(partial(batched_logits, model, mean=mean, std=std, device=device),
                                 sample, device=device, repeats=PROBE_REPEATS)
        self.observe(len(sample), len(sample) / rate)
        if test_logits_of is not None:  # a chunk for each thread: ONNX Runtime runs them side by side
            spread = np.asarray(images[:usable_cpus() * inference_batch_size("cpu", sample.shape[-1])])
            self.test_speedup = images_per_second(test_logits_of, spread, batch_size=len(spread),
                                                  repeats=PROBE_REPEATS) / rate

    def observe(self, images: int, seconds: float) -> None:
        """Record a measured inference pass (e.g. one validation epoch)."""
        if images:
            self.seconds_per_image = seconds / images

    def describe(self, loop_started: float) -> str:
        """One line for the user: where the budget goes."""
        if self.budget is None:
            return ""
        used = loop_started - self.started
        return (f"time budget {self.budget:.0f}s: {used:.0f}s used before training, "
                f"~{self.training_seconds(loop_started):.0f}s training, ~{self.finish_seconds():.0f}s "
                "for calibration, test evaluation and the report")
