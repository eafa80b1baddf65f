"""Data, model and configuration shared by the MPI worker and the one-process reference run."""
import numpy as np

import minidl as md
from minidl.experiment import TrainConfig
from minidl.models import get_model


# AutoAttack's radius in the sharded-breakdown case: APGD-CE breaks 9 of its 12 points, APGD-T the rest
AA_EPS = 0.09


def dataset(n, seed=0, classes=3, size=8):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.random((n, 1, size, size)).astype(np.float32) * 0.3
    for c in range(classes):
        x[y == c, :, 2 * c:2 * c + 2, :] += 0.6
    return np.clip(x, 0, 1), y.astype(np.int64)


def autoattack_data(model, n=12):
    """Images labelled with ``model``'s own predictions, so every point starts robust and the
    stages have points to break."""
    from minidl.adversarial.evaluate import predict
    x, _ = dataset(n, seed=3)
    return x, predict(model, md.tensor(x))


def tiny_model():
    md.manual_seed(0)
    return get_model("mlp", in_channels=1, image_size=8).eval()


def banded_model(classes=3, size=8):
    """A linear classifier that reads the class band of :func:`dataset`: right on most images,
    not all (so per-example results have an order to get wrong)."""
    model = md.nn.Sequential(md.nn.Flatten(), md.nn.Linear(size * size, classes))
    w = np.zeros((classes, 1, size, size), dtype=np.float32)
    for c in range(classes):
        w[c, :, 2 * c:2 * c + 2, :] = 1.0
    model[1].weight.array[...] = w.reshape(classes, -1)
    model[1].bias.array[...] = [10.5, 0.0, 0.0]  # class 0 wins the close calls
    return model.eval()


def train_config(epochs, adv="none"):
    # global batches of 15 over 62 images split 7/8 over 2 ranks (the last, of 2, splits 1/1):
    # a gradient average that ignored the shares would not match the one-process run.
    return TrainConfig(dataset="synthetic", model="mlp", epochs=epochs, batch_size=15, lr=0.05, optimizer="sgd",
                       schedule="constant", seed=5, adv=adv, eps=0.1, alpha=0.05, steps=2)


# The study's pipeline at toy sizes (tests/test_study.py uses the same).
STUDY_TINY = dict(natural_epochs=1, adv_epochs=1, rse_epochs=1, eval_n=30, pgd_steps=2, rse_n=2, rse_eot=2,
                  rse_eval_n=12, uap_n=24, uap_test_n=20, uap_steps=2, uap_k=3, iterative_passes=1, landscape_n=3,
                  landscape_steps=2, cos_points=3, batch_size=32)


def study_arrays():
    return dataset(128), dataset(40, seed=1)
