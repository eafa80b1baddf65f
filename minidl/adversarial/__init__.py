"""Adversarial robustness toolkit: attacks, robust evaluation, adversarial training, UAPs."""
from .attacks import fgsm, pgd, fgsm_random_start, input_gradient, attack_loss
from .evaluate import robust_accuracy, accuracy_vs_eps, sanity_checks, is_randomized

__all__ = ["fgsm", "pgd", "fgsm_random_start", "input_gradient", "attack_loss", "robust_accuracy",
           "accuracy_vs_eps", "sanity_checks", "is_randomized"]
