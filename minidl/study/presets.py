"""The study's presets: every knob of a run, per dataset, quick (minutes on a CPU) or full."""
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
    rse_epochs: int
    train_limit: int         # None = the whole training set
    batch_size: int
    eval_n: int              # test images for the accuracy table
    linf_eps: tuple          # L-inf eps values of the accuracy table
    l2_eps: float            # L2 eps of the accuracy table and of the UAPs
    pgd_steps: int
    pgd_restarts: int
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


PRESETS = {
    ("mnist", "quick"): Preset(
        model="wong_mnist", rse_model="rse_wong_mnist", natural_epochs=1, adv="fgsm", adv_epochs=6, adv_eps=0.3,
        adv_steps=1, adv_lr=5e-3, rse_epochs=1, train_limit=None, batch_size=128, eval_n=500, linf_eps=(0.1, 0.3), l2_eps=2.0,
        pgd_steps=20, pgd_restarts=1, rse_n=10, rse_eot=10, rse_eval_n=200, uap_n=500, uap_test_n=500,
        uap_steps=20, uap_k=5, iterative_passes=2, landscape_n=20, landscape_steps=20, cos_points=16,
        cos_eps=0.3),
    ("mnist", "full"): Preset(
        model="madry_mnist", rse_model="rse_madry_mnist", natural_epochs=3, adv="fgsm", adv_epochs=10,
        adv_eps=0.3, adv_steps=1, adv_lr=5e-3, rse_epochs=3, train_limit=None, batch_size=128, eval_n=10000,
        linf_eps=(0.1, 0.3), l2_eps=2.0, pgd_steps=50, pgd_restarts=10, rse_n=20, rse_eot=20, rse_eval_n=1000,
        uap_n=2000, uap_test_n=2000, uap_steps=50, uap_k=5, iterative_passes=5, landscape_n=100,
        landscape_steps=50, cos_points=32, cos_eps=0.3),
    ("cifar10", "quick"): Preset(
        model="cifar_cnn", rse_model="rse_cifar_cnn", natural_epochs=2, adv="fgsm", adv_epochs=2, adv_eps=8 / 255,
        adv_steps=1, adv_lr=None, rse_epochs=2, train_limit=10000, batch_size=128, eval_n=500, linf_eps=(2 / 255, 8 / 255),
        l2_eps=0.5, pgd_steps=10, pgd_restarts=1, rse_n=10, rse_eot=10, rse_eval_n=100, uap_n=300,
        uap_test_n=300, uap_steps=10, uap_k=5, iterative_passes=1, landscape_n=10, landscape_steps=10,
        cos_points=8, cos_eps=8 / 255),
    ("cifar10", "full"): Preset(
        model="preact_resnet18", rse_model="rse_cifar_cnn", natural_epochs=15, adv="fgsm", adv_epochs=15,
        adv_eps=8 / 255, adv_steps=1, adv_lr=None, rse_epochs=15, train_limit=None, batch_size=128, eval_n=1000,
        linf_eps=(2 / 255, 8 / 255), l2_eps=0.5, pgd_steps=50, pgd_restarts=10, rse_n=20, rse_eot=20,
        rse_eval_n=500, uap_n=2000, uap_test_n=1000, uap_steps=50, uap_k=5, iterative_passes=5,
        landscape_n=100, landscape_steps=50, cos_points=32, cos_eps=8 / 255),
}


def get_preset(dataset, preset, **overrides):
    """The preset for (dataset, preset) with the fields in ``overrides`` replaced."""
    key = (dataset, preset)
    if key not in PRESETS:
        raise ValueError(f"no preset {preset!r} for dataset {dataset!r}; choose from {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[key], **overrides)
