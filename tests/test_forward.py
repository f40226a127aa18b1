"""Batched forward passes: the batch size follows the device and the image size, the logits do not."""

import numpy as np
import torch

from mediscan.forward import batched_outputs, inference_batch_size
from mediscan.models import create_model


def test_cpu_batches_shrink_with_the_image_so_activations_stay_in_cache():
    assert inference_batch_size("cpu", 96) == 32
    assert inference_batch_size("cpu", 128) == 16
    assert inference_batch_size("cpu", 224) == 8 and inference_batch_size("cpu", 512) == 8
    assert inference_batch_size("cpu", 28) == 256  # tiny images: capped
    assert inference_batch_size("cuda", 224) == 256


def test_the_batch_size_does_not_change_the_logits():
    torch.manual_seed(0)
    model = create_model("resnet18", 3)
    images = np.random.default_rng(0).integers(0, 256, (40, 3, 64, 64), dtype=np.uint8)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    chosen = batched_outputs(model, images, mean=mean, std=std).logits  # 72 per batch at 64 px
    in_sevens = batched_outputs(model, images, mean=mean, std=std, batch_size=7).logits
    assert chosen.shape == (40, 3)
    np.testing.assert_allclose(chosen, in_sevens, rtol=1e-4, atol=1e-4)
