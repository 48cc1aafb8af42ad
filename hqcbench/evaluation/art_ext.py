"""ART subclasses the strong evaluation needs: EOT over a sampled readout, AutoAttack's targeted APGD.

This module imports ART at the top (~2.4 s), so ``evaluation.attacks`` imports it only when it
builds an attack (``make_autoattack`` there composes these with ART's own attacks).
"""
from __future__ import annotations

import numpy as np
from art.attacks.attack import EvasionAttack
from art.attacks.evasion import AutoProjectedGradientDescent
from art.estimators.classification import PyTorchClassifier
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.estimator import BaseEstimator, LossGradientsMixin


class EOTClassifier(PyTorchClassifier):
    """``PyTorchClassifier`` whose loss gradients and losses are means over ``eot_samples`` forward and
    backward passes: expectation over transformation (Athalye et al. 2018) for a circuit whose
    readout is sampled, where each pass draws fresh shots. Predictions stay single draws: the
    attacked model is judged as it would answer.

    Why a subclass and not ART's ``EoTPyTorch`` preprocessor: that one repeats each input in the
    batch, so ``predict`` returns ``eot_samples`` rows per image and ART's attacks miscount; the
    randomness here is in the model, not in a transformation of the input.
    """

    def __init__(self, *args, eot_samples: int, **kwargs):
        super().__init__(*args, **kwargs)
        if eot_samples < 1:
            raise ValueError(f"eot_samples must be >= 1, got {eot_samples}")
        self.eot_samples = int(eot_samples)

    def _mean(self, draw):
        total = draw()
        for _ in range(self.eot_samples - 1):
            total = total + draw()
        return total / self.eot_samples

    def loss_gradient(self, x, y, training_mode: bool = False, **kwargs):
        return self._mean(lambda: super(EOTClassifier, self).loss_gradient(x, y, training_mode=training_mode,
                                                                           **kwargs))

    def compute_loss(self, x, y, reduction: str = "none", **kwargs):
        return self._mean(lambda: super(EOTClassifier, self).compute_loss(x, y, reduction=reduction, **kwargs))

    def class_gradient(self, x, label=None, training_mode: bool = False, **kwargs):
        return self._mean(lambda: super(EOTClassifier, self).class_gradient(x, label=label,
                                                                            training_mode=training_mode, **kwargs))


class TopTargetsAPGD(EvasionAttack):
    """AutoAttack's APGD-T: targeted APGD towards each of the ``targets`` classes an image scores
    highest after its true one, stopping per image at the first success. To ``AutoAttack`` it is one
    untargeted attack (it succeeds when the label changes).

    Hand-written loop around ART's APGD because ART's ``AutoAttack(targeted=True)`` re-runs *every*
    attack of its list (CE and Square included) towards *every* other class: 99 runs each on
    CIFAR-100, where AutoAttack itself attacks the top 9.
    """

    attack_params = EvasionAttack.attack_params + ["targets", "batch_size"]
    _estimator_requirements = (BaseEstimator, LossGradientsMixin, ClassifierMixin)

    def __init__(self, apgd: AutoProjectedGradientDescent, targets: int, batch_size: int):
        super().__init__(estimator=apgd.estimator)
        self.apgd, self.targets, self.batch_size = apgd, targets, batch_size
        self.apgd.set_params(targeted=True)

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> np.ndarray:
        scores = self.estimator.predict(x, batch_size=self.batch_size)
        labels = scores.argmax(1) if y is None else (y.argmax(1) if y.ndim == 2 else y.astype(int))
        scores[np.arange(len(x)), labels] = -np.inf
        order = np.argsort(-scores, axis=1)[:, :self.targets]
        x_adv = x.copy()
        robust = np.ones(len(x), dtype=bool)
        for rank in range(order.shape[1]):
            todo = np.flatnonzero(robust)
            if not todo.size:
                break
            target = np.eye(self.estimator.nb_classes, dtype=np.float32)[order[todo, rank]]
            adv = self.apgd.generate(x[todo], target)
            fooled = self.estimator.predict(adv, batch_size=self.batch_size).argmax(1) != labels[todo]
            x_adv[todo[fooled]] = adv[fooled]
            robust[todo[fooled]] = False
        return x_adv
