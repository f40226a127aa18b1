"""The class shares a model's probabilities assume: the logit shift from the training draws to a prior."""

import json

import numpy as np
import pytest
from scipy.special import softmax
from scipy.stats import norm

from mediscan.predict import Classifier
from mediscan.training.decision_prior import class_bias, draw_shares, relabel
from mediscan.training.recipes import get_recipe
from mediscan.training.sampling import sampling_weights
from mediscan.training.trainer import train
from shapes_data import CLASSES, make_shapes

LABELS = np.array([0] * 700 + [1] * 200 + [2] * 100)


def test_balanced_draws_have_equal_shares_and_a_plain_pass_the_frequencies():
    np.testing.assert_allclose(draw_shares(LABELS, 3, sampling_weights(LABELS, "sampler")), [1 / 3] * 3,
                               rtol=1e-6)
    np.testing.assert_allclose(draw_shares(LABELS, 3), [0.7, 0.2, 0.1])
    inverse_frequency = len(LABELS) / (3 * np.bincount(LABELS))  # balance="weights": the loss's class weights
    np.testing.assert_allclose(draw_shares(LABELS, 3, class_weights=inverse_frequency), [1 / 3] * 3)


def test_relabelling_moves_a_share_and_is_not_undone():
    """Synthetic lesions: 35% of class 2 counts as class 0, in the prior as in the draws."""
    np.testing.assert_allclose(relabel(np.array([0.2, 0.3, 0.5]), (2, 0, 0.4)), [0.4, 0.3, 0.3])
    draws = draw_shares(LABELS, 3, sampling_weights(LABELS, "sampler"))
    np.testing.assert_allclose(class_bias(LABELS, draws, "balanced", relabelled=(2, 0, 0.35)), 0, atol=1e-6)
    np.testing.assert_allclose(class_bias(LABELS, draws, "train", relabelled=(2, 0, 0.35)),
                               np.log([(0.7 + 0.035) / (1 / 3 * 1.35), 0.2 * 3, 0.065 / (1 / 3 * 0.65)]))


def test_bias_is_the_log_ratio_of_prior_to_draws():
    draws = np.array([1 / 3] * 3)
    np.testing.assert_allclose(class_bias(LABELS, draws, "train"), np.log([0.7 * 3, 0.2 * 3, 0.1 * 3]))
    np.testing.assert_allclose(class_bias(LABELS, draws, "balanced"), [0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(class_bias(LABELS, np.array([0.7, 0.2, 0.1]), "balanced"),
                               np.log([1 / 2.1, 1 / 0.6, 1 / 0.3]))
    assert not class_bias(LABELS, np.array([0.5, 0.5, 0.0]), "draws").any()
    assert class_bias(LABELS, np.array([0.5, 0.5, 0.0]), "train")[2] == 0  # never drawn: left alone
    with pytest.raises(ValueError, match="prior 'natural' is not one of train, balanced, draws"):
        class_bias(LABELS, draws, "natural")


def test_unknown_prior_is_refused_by_the_recipe():
    with pytest.raises(ValueError, match="prior 'natural' is not one of"):
        get_recipe("cpu").with_overrides(prior="natural")


def test_shifted_balanced_posterior_is_the_bayes_rule_under_the_training_prior():
    """Two Gaussian classes, 90% / 10%. A model trained on balanced draws learns the posterior under
    equal priors; the shift to the training prior recovers the true posterior, whose accuracy on data
    like the training set is higher (Bayes-optimal), while the unshifted one over-calls the rare class."""
    rng = np.random.default_rng(0)
    y = (rng.random(200_000) < 0.1).astype(int)
    x = rng.normal(np.where(y == 1, 1.5, 0.0), 1.0)
    balanced_logits = np.stack([norm.logpdf(x, 0.0), norm.logpdf(x, 1.5)], axis=1)
    bias = class_bias(y, draw_shares(y, 2, sampling_weights(y, "sampler")), "train")
    shifted = softmax(balanced_logits + bias, axis=1)
    rare = y.mean()  # the training split's share of class 1, what "train" assumes
    truth = np.stack([(1 - rare) * norm.pdf(x, 0.0), rare * norm.pdf(x, 1.5)], axis=1)
    np.testing.assert_allclose(shifted, truth / truth.sum(1, keepdims=True), atol=1e-6)
    plain_accuracy = (balanced_logits.argmax(1) == y).mean()
    shifted_accuracy = (shifted.argmax(1) == y).mean()
    assert shifted_accuracy > plain_accuracy + 0.1
    assert (shifted.argmax(1) == 1).mean() < (balanced_logits.argmax(1) == 1).mean() / 3


@pytest.mark.slow
def test_training_records_the_bias_and_the_classifier_applies_it(tmp_path, capsys):
    """An imbalanced folder (60 / 20 / 8 images): the bundle's class_bias is log(train frequency / 1/3),
    printed before training, and every prediction is softmax(logits / T + class_bias)."""
    root = make_shapes(tmp_path / "data", n_per_class=60)
    for name, keep in zip(CLASSES, (60, 20, 8)):
        for path in sorted((root / name).iterdir())[keep:]:
            path.unlink()
    options = dict(model="resnet18", input_size=32, epochs=1, batch_size=16, augment="demo",
                   crop_foreground=False, group_duplicates=False, device="cpu", workers=1,
                   cache_dir=tmp_path / "cache", evaluate=False)
    run = train(root, recipe="default", out=tmp_path / "run", progress=True, **options)
    assert "decisions assume the training split's class frequencies" in " ".join(capsys.readouterr().err.split())
    meta = json.loads((run / "model.json").read_text())
    train_counts = np.array([meta["data"]["counts"]["train"][c] for c in meta["classes"]])
    np.testing.assert_allclose(meta["class_bias"], np.log(train_counts / train_counts.sum() * 3), atol=1e-5)
    classifier = Classifier.load(run, device="cpu")
    images = np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    logits = classifier.logits_batch(images)
    np.testing.assert_allclose(classifier.predict_batch(images),
                               softmax(logits / meta["temperature"] + np.array(meta["class_bias"]), axis=1),
                               rtol=1e-6)
    plain = train(root, recipe="default", out=tmp_path / "plain", progress=False, prior="draws", **options)
    assert json.loads((plain / "model.json").read_text())["class_bias"] == [0.0, 0.0, 0.0]
