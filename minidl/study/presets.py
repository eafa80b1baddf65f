"""The study's presets: every knob of a run, per dataset: quick (minutes on a CPU), standard (an hour
or two on a CPU: the talk's network on MNIST, CIFAR-10) or full (the faithful version, for a GPU)."""
import dataclasses


@dataclasses.dataclass
class Preset:
    """Every knob of one study run."""
    model: str
    rse_model: str
    natural_epochs: int
    adv: str                 # fgsm | pgd
    adv_epochs: int
    adv_eps: float
    adv_steps: int
    adv_lr: float            # Adam's peak learning rate for adversarial training (Wong et al.: 5e-3)
    adv_alpha: float         # the training attack's step (None: 1.25 eps for FGSM, 2.5 eps / steps for PGD)
    adv_eps_warmup: float    # epochs over which the training eps (and alpha) ramps up from 0
    adv_init: str            # weight init of the adversarial model: default | he | fan_in_uniform
    adv_schedule: str        # lr schedule of adversarial training (None: TrainConfig's default)
    rse_epochs: int
    train_limit: int         # None = the whole training set
    batch_size: int
    eval_n: int              # test images for the accuracy table
    linf_eps: tuple          # L-inf eps values of the accuracy table
    l2_eps: float            # L2 eps of the accuracy table and of the UAPs
    pgd_steps: int
    pgd_restarts: int
    autoattack_n: int        # first test images under AutoAttack (standard) at max(linf_eps); 0 = none
    rse_n: int               # ensemble size
    rse_eot: int             # expectation-over-noise samples
    rse_eval_n: int
    uap_n: int               # images whose perturbations form the matrix
    uap_test_n: int          # held-out images for fooling rates
    uap_steps: int
    uap_k: int               # singular vectors shown and tested
    iterative_passes: int
    landscape_n: int         # images for trajectories / cosine similarities
    landscape_steps: int
    cos_points: int
    cos_eps: float
    # Landscape radii as fractions of cos_eps (L-inf balls) and of l2_eps (L2 balls); 1.0 is
    # always added, since the talk's own measures are taken at the full radius.
    landscape_fractions: tuple = (0.25, 0.5, 1.0)
    landscape_directions: int = 4   # random directions u, each used as +u and -u, for the curvature ratio

    def to_dict(self):
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


# Why the CPU presets' numbers are what they are (times are for the 2-core CPU of the README,
# estimated from measured per-epoch and per-attack costs; the README gives the measured runs):
#
# mnist quick (the README's first line, <= 10 minutes with `pip install`):
#   natural: 3 epochs of Adam (1e-3, cosine, batch 128) reached 98.59% on the test set, too close to
#     98.5%; 4 epochs cost a few seconds more (1 epoch stopped near 98%).
#   adversarial: Wong et al.'s PGD recipe (Adam, cyclic lr peaking at 5e-3, PyTorch's fan-in init,
#     eps ramped up from 0) shortened from 10 epochs of PGD-10 to 4 epochs of PGD-5: 24 forward-
#     backward passes per image instead of 110, the largest cut that still fits the budget. Five
#     steps of 2.5 eps / 5 = 0.15 still reach the corners of the eps = 0.3 ball; the ramp takes the
#     first of the 4 epochs (their 2 of 10), without which PGD training stalls at chance.
#   batch 100 as in Wong et al.; AutoAttack on 100 images (about a minute and a half for the robust
#     model: its Square stage spends 5,000 queries on every point that survives).
# mnist standard (<= 60 minutes): the talk's network madry_mnist, whose training step costs 16 times
#   wong_mnist's; 1 natural epoch (about 99%; 221 s); PGD-3 (alpha 0.25) for 2 epochs, eps ramped
#   over the first: 2 x (1 + 3 x 0.68) = 6 natural epochs of cost (a PGD step costs 0.68 of a
#   training step here), about 22 minutes; 1,000 images for the SVD; AutoAttack on 50 images
#   (about 8 minutes: Square's 5,000 queries on each robust point are half of it).
# cifar10 standard (<= 2 hours): cifar_cnn, 4 natural epochs (about 22 minutes), and fast FGSM
#   training (random start, alpha 10/255; Wong et al. 2020) rather than PGD: it costs 1.7 natural
#   epochs per epoch where PGD-7 would cost 5.8, so 4 epochs fit (about 38 minutes), and its guard
#   catches catastrophic overfitting; L2 UAPs at eps 0.5 from 1,000 training images.
PRESETS = {
    ("mnist", "quick"): Preset(
        model="wong_mnist", rse_model="rse_wong_mnist", natural_epochs=4, adv="pgd", adv_epochs=4, adv_eps=0.3,
        adv_steps=5, adv_lr=5e-3, adv_alpha=None, adv_eps_warmup=1, adv_init="fan_in_uniform", adv_schedule="cyclic",
        rse_epochs=1, train_limit=None, batch_size=100, eval_n=500, linf_eps=(0.1, 0.3), l2_eps=2.0,
        pgd_steps=20, pgd_restarts=1, autoattack_n=100, rse_n=10, rse_eot=10, rse_eval_n=200, uap_n=500,
        uap_test_n=500, uap_steps=20, uap_k=5, iterative_passes=2, landscape_n=20, landscape_steps=20, cos_points=16,
        cos_eps=0.3),
    ("mnist", "standard"): Preset(
        model="madry_mnist", rse_model="rse_madry_mnist", natural_epochs=1, adv="pgd", adv_epochs=2, adv_eps=0.3,
        adv_steps=3, adv_lr=5e-3, adv_alpha=None, adv_eps_warmup=1, adv_init="fan_in_uniform", adv_schedule="cyclic",
        rse_epochs=1, train_limit=None, batch_size=100, eval_n=500, linf_eps=(0.1, 0.3), l2_eps=2.0,
        pgd_steps=20, pgd_restarts=1, autoattack_n=50, rse_n=10, rse_eot=5, rse_eval_n=100, uap_n=1000,
        uap_test_n=1000, uap_steps=20, uap_k=5, iterative_passes=2, landscape_n=20, landscape_steps=20, cos_points=16,
        cos_eps=0.3),
    ("mnist", "full"): Preset(
        model="madry_mnist", rse_model="rse_madry_mnist", natural_epochs=3, adv="fgsm", adv_epochs=10,
        adv_eps=0.3, adv_steps=1, adv_lr=5e-3, adv_alpha=None, adv_eps_warmup=0, adv_init="default", adv_schedule=None,
        rse_epochs=3, train_limit=None, batch_size=128, eval_n=10000,
        linf_eps=(0.1, 0.3), l2_eps=2.0, pgd_steps=50, pgd_restarts=10, autoattack_n=1000, rse_n=20, rse_eot=20,
        rse_eval_n=1000, uap_n=2000, uap_test_n=2000, uap_steps=50, uap_k=5, iterative_passes=5, landscape_n=100,
        landscape_steps=50, cos_points=32, cos_eps=0.3),
    ("cifar10", "quick"): Preset(
        model="cifar_cnn", rse_model="rse_cifar_cnn", natural_epochs=2, adv="fgsm", adv_epochs=2, adv_eps=8 / 255,
        adv_steps=1, adv_lr=None, adv_alpha=None, adv_eps_warmup=0, adv_init="default", adv_schedule=None,
        rse_epochs=2, train_limit=10000, batch_size=128, eval_n=500, linf_eps=(2 / 255, 8 / 255),
        l2_eps=0.5, pgd_steps=10, pgd_restarts=1, autoattack_n=50, rse_n=10, rse_eot=10, rse_eval_n=100, uap_n=300,
        uap_test_n=300, uap_steps=10, uap_k=5, iterative_passes=1, landscape_n=10, landscape_steps=10,
        cos_points=8, cos_eps=8 / 255),
    ("cifar10", "standard"): Preset(
        model="cifar_cnn", rse_model="rse_cifar_cnn", natural_epochs=4, adv="fgsm", adv_epochs=4, adv_eps=8 / 255,
        adv_steps=1, adv_lr=None, adv_alpha=None, adv_eps_warmup=0, adv_init="default", adv_schedule=None,
        rse_epochs=1, train_limit=None, batch_size=128, eval_n=500, linf_eps=(2 / 255, 8 / 255),
        l2_eps=0.5, pgd_steps=10, pgd_restarts=1, autoattack_n=100, rse_n=10, rse_eot=10, rse_eval_n=100,
        uap_n=1000, uap_test_n=1000, uap_steps=10, uap_k=5, iterative_passes=1, landscape_n=10, landscape_steps=10,
        cos_points=8, cos_eps=8 / 255),
    ("cifar10", "full"): Preset(
        model="preact_resnet18", rse_model="rse_cifar_cnn", natural_epochs=15, adv="fgsm", adv_epochs=15,
        adv_eps=8 / 255, adv_steps=1, adv_lr=None, adv_alpha=None, adv_eps_warmup=0, adv_init="default",
        adv_schedule=None, rse_epochs=15, train_limit=None, batch_size=128, eval_n=1000,
        linf_eps=(2 / 255, 8 / 255), l2_eps=0.5, pgd_steps=50, pgd_restarts=10, autoattack_n=1000, rse_n=20, rse_eot=20,
        rse_eval_n=500, uap_n=2000, uap_test_n=1000, uap_steps=50, uap_k=5, iterative_passes=5,
        landscape_n=100, landscape_steps=50, cos_points=32, cos_eps=8 / 255),
}


def get_preset(dataset, preset, **overrides):
    """The preset for (dataset, preset) with the fields in ``overrides`` replaced."""
    key = (dataset, preset)
    if key not in PRESETS:
        raise ValueError(f"no preset {preset!r} for dataset {dataset!r}; choose from {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[key], **overrides)


# --- the spectrum-sensitivity stage (issue 33) -----------------------------------------------------
# Its knobs are derived from the preset's own fields instead of being new Preset fields: every
# stage's cache key holds the whole preset, so a new field would make runs already on disk
# recompute every finished stage. Three L2 radii around the preset's l2_eps: half, the preset's
# own and twice, far enough apart that a radius effect shows, near enough that the attack stays
# in the same regime (at 2 l2_eps PGD still leaves the robust model some points on MNIST).
SPECTRUM_RADIUS_FACTORS = (0.5, 1.0, 2.0)
# The extra radii are computed on the first uap_n // SPECTRUM_EXTRA_DIVISOR matrix images (the
# preset's radius reuses the UAP stage's matrix of all uap_n): they cost a PGD run each, and
# uap_n / 2 still gives the per-class matrices about 25 (quick) to 100 (standard) rows per class.
SPECTRUM_EXTRA_DIVISOR = 2
# A per-class matrix (one true class, or one adversarial label) with fewer rows than this is
# left out of the per-class summary (and counted): five singular values need five rows, and
# the ratio of the top two of a 5-row matrix says little.
SPECTRUM_MIN_ROWS = 10


def spectrum_settings(p):
    """The spectrum stage's settings for preset ``p``: the radii (the preset's l2_eps is the
    one equal to it), the rows used at each radius, the smallest per-class matrix judged."""
    radii = [float(f * p.l2_eps) for f in SPECTRUM_RADIUS_FACTORS]
    extra_n = max(1, p.uap_n // SPECTRUM_EXTRA_DIVISOR)
    return {"radii": radii, "preset_radius": float(p.l2_eps),
            "rows": [int(p.uap_n if f == 1.0 else extra_n) for f in SPECTRUM_RADIUS_FACTORS],
            "min_rows": SPECTRUM_MIN_ROWS, "steps": p.uap_steps}
