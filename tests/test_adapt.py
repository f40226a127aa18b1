"""Test-time batch-norm adaptation: the statistics become the new images', nothing else changes."""

import numpy as np
import torch
from torch import nn

from mediscan.evaluation.adapt import MIN_IMAGES, adapt_batchnorm
from mediscan.transforms import normalize


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def test_running_statistics_become_those_of_the_new_site():
    model = _model().eval()
    images = np.random.default_rng(0).integers(100, 250, (64, 3, 16, 16), dtype=np.uint8)
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num" not in k}
    assert adapt_batchnorm(model, images, mean=(0.5,) * 3, std=(0.25,) * 3, batch_size=16) == 1
    with torch.no_grad():
        features = model[0](normalize(torch.from_numpy(images), (0.5,) * 3, (0.25,) * 3))
    bn = model[1]
    assert torch.allclose(bn.running_mean, features.mean(dim=(0, 2, 3)), atol=1e-4)
    assert torch.allclose(bn.running_var, features.var(dim=(0, 2, 3)), rtol=1e-2)
    assert bn.momentum == 0.1 and not bn.training
    for key, value in model.state_dict().items():
        if key in weights:
            assert torch.equal(value, weights[key])


def test_too_few_images_leave_the_model_as_trained():
    model = _model()
    before = model[1].running_mean.clone()
    images = np.zeros((MIN_IMAGES - 1, 3, 16, 16), dtype=np.uint8)
    assert adapt_batchnorm(model, images, mean=(0.5,) * 3, std=(0.25,) * 3) == 0
    assert torch.equal(model[1].running_mean, before)
