"""The robustness study: ``python -m minidl study --dataset mnist|cifar10 --preset quick|standard|full``.

It reproduces, on models minidl trains itself, the questions of "Probing the Structure of Deep
Neural Networks with Universal Adversarial Perturbations" (Bhat, with Tsipras, MIT PRIMES 2019):

1. train a natural, an adversarially trained (fast FGSM or PGD) and a Random Self-Ensemble model;
2. evaluate clean, FGSM, PGD and AutoAttack accuracy (RSE: with the single-pass gradient of the original
   paper and with expectation over noise), with the sanity checks of ``adversarial.evaluate``;
3. compute per-image L2 PGD perturbations, their singular-value spectrum and the universal
   perturbations built from them (top singular vectors, the average, the iterative UAP of
   Moosavi-Dezfooli et al. as a baseline, a random direction of the same norm), and their
   fooling rates on held-out images;
   and the sensitivity of the spectrum to the matrix's definition (all classes, per true class, per
   adversarial label; centred or not; three radii; PGD perturbations or input gradients);
4. probe the loss landscape: straightness of PGD trajectories and the cosine similarity of
   gradients at random points around an image;
5. write ``report.md`` (tables and figures, each with what produced it), the PNGs and
   ``metrics.json`` into ``--out``.

``--seeds 0,1,2`` runs the whole study once per seed (in ``<out>/seed-<seed>``) and reports every
verdict as "reproduces in k of n seeds" (``seeds``). The run ends by printing the verdict table.

Every stage stores its result under ``<out>/stages``; a second run with the same settings reuses
finished stages (and trained models) instead of recomputing them.

The package, in the order a run uses it: ``presets`` (every knob), ``stages`` (the cache of
finished stages and trained models), ``analyses`` and ``spectrum`` (the measurements), ``report`` (tables,
figures and the verdicts with their named thresholds), ``seeds`` (the aggregate over seeds and
the printed verdict table), ``run`` (:func:`run_study`, :func:`run_seeds`).
"""
from .presets import PRESETS, Preset, get_preset
from .stages import Stages, same_settings, train_models
from .analyses import accuracy_table, landscape_analysis, rse_table, uap_analysis
from .report import findings, write_report
from .run import run_seeds, run_study
from .seeds import aggregate
from .spectrum import spectrum_analysis

__all__ = ["PRESETS", "Preset", "get_preset", "Stages", "same_settings", "train_models", "accuracy_table",
           "rse_table", "uap_analysis", "landscape_analysis", "findings", "write_report", "run_study",
           "run_seeds", "aggregate", "spectrum_analysis"]
