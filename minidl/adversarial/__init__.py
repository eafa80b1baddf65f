"""Adversarial robustness toolkit: attacks, robust evaluation, adversarial training, UAPs."""
from .attacks import fgsm, pgd, fgsm_random_start, noisy_fgsm, input_gradient, attack_loss, dlr_loss, dlr_loss_targeted
from .apgd import apgd
from .square import square
from .fab import fab
from .autoattack import autoattack, autoattack_accuracy, StageLog
from .evaluate import robust_accuracy, accuracy_vs_eps, sanity_checks, is_randomized

__all__ = ["fgsm", "pgd", "fgsm_random_start", "noisy_fgsm", "input_gradient", "attack_loss", "dlr_loss", "dlr_loss_targeted",
           "apgd", "square", "fab", "autoattack", "autoattack_accuracy", "StageLog", "robust_accuracy", "accuracy_vs_eps", "sanity_checks",
           "is_randomized"]
