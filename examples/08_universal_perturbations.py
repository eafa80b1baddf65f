"""Example 8: universal adversarial perturbations from the SVD of per-image perturbations, and the
loss landscape around one image (the questions of Bhat and Tsipras, MIT PRIMES 2019).

    python examples/08_universal_perturbations.py --checkpoint runs/mnist/checkpoint.npz --data-dir ../shared/data

1. Attack N images with L2 PGD and stack the perturbations as rows of a matrix.
2. Its top right singular vectors are directions shared by many images: scaled to eps, each is a
   universal perturbation. Compare their fooling rate on other images with a random direction.
3. The spectrum tells how many such directions there are; the pictures show what they look like.
4. The straightness of PGD paths and the similarity of nearby gradients describe the landscape.
`python -m minidl study` runs all of this for a natural and an adversarially trained model.
"""
import argparse
import os

import numpy

from minidl.adversarial import landscape, plots, uap
from minidl.data import MNIST
from minidl.experiment import load_model

parser = argparse.ArgumentParser()
parser.add_argument("--checkpoint", required=True)
parser.add_argument("--data-dir", default=None)
parser.add_argument("--eps", type=float, default=2.0)
parser.add_argument("--n", type=int, default=500)
parser.add_argument("--out", default="runs/example-uap")
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)

model, _ = load_model(args.checkpoint)
test = MNIST(root=args.data_dir, train=False)
build = (test.images[:args.n], test.labels[:args.n])
held = (test.images[args.n:2 * args.n], test.labels[args.n:2 * args.n])

matrix = uap.per_example_perturbations(model, *build, eps=args.eps, steps=20, norm="2")
spectrum = uap.singular_spectrum(matrix)
print("top-5 singular values:", [round(float(s), 2) for s in spectrum[:5]])
svd = uap.uap_svd(matrix, k=5, eps=args.eps, model=model, images=build[0], labels=build[1])
for i, v in enumerate(svd.vectors):
    r = uap.fooling_rate(model, *held, v.reshape(1, 28, 28))
    print(f"singular vector {i + 1}: fooling rate {r['fooling_rate']:.3f} on held-out images")
rand = uap.fooling_rate(model, *held, uap.random_direction((1, 28, 28), args.eps, rng=0))
print(f"random direction of the same norm: fooling rate {rand['fooling_rate']:.3f}")
plots.plot_spectra({"model": spectrum}, f"{args.out}/spectrum.png")
plots.plot_singular_vectors({"model": svd}, f"{args.out}/singular_vectors.png", image_shape=(1, 28, 28))

few = (build[0][:20], build[1][:20])
paths = landscape.pgd_paths(model, *few, args.eps, args.eps / 8, 20)["iterates"]
straight = landscape.path_straightness(paths)
print(f"PGD path straightness of {len(straight)} images: mean {numpy.nanmean(straight):.3f} (1 = straight)")
landscape.plot_trajectory(model, few[0][0], int(few[1][0]), paths[:, 0], f"{args.out}/trajectory.png")
cos = landscape.ball_gradient_cosines(model, *few, radii=[0.3], n_points=16)
print(f"mean cosine similarity of gradients in the 0.3-balls around them: {numpy.nanmean(cos['ball_cosine']):.3f}")
print(f"figures in {args.out}/")
