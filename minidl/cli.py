"""The ``python -m minidl`` command line. Bad arguments end with one clear line, not a traceback."""
import argparse
import os
import sys


class UsageError(Exception):
    """A mistake in the command line, reported as one line."""


def cmd_info(args):
    from .info import describe, warm_up
    print(describe())
    if args.warm_up:
        print("\n".join(warm_up(args.warm_up, args.batch)))
    return 0


def _positive(kind, name):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a {kind.__name__}, got {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{name} must be >= 0, got {text}")
        return value
    return parse


def cmd_train(args):
    from .experiment import TrainConfig, run_training
    config = TrainConfig(dataset=args.dataset, model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                         lr=args.lr, optimizer=args.optimizer, schedule=args.schedule, device=args.device,
                         data_dir=args.data_dir, seed=args.seed, adv=args.adv, eps=args.eps, alpha=args.alpha,
                         steps=args.steps, train_limit=args.train_limit, holdout=args.holdout,
                         augment=not args.no_augment, init=args.init, eps_warmup=args.eps_warmup)
    run_training(config, args.out, resume=args.resume, progress=not args.quiet)
    return 0


def cmd_eval(args):
    from .experiment import evaluate_checkpoint
    result = evaluate_checkpoint(args.checkpoint, data_dir=args.data_dir, device=args.device,
                                 split=args.split, limit=args.limit, progress=not args.quiet)
    print(f"{result['split']} accuracy: {result['accuracy']:.4f} on {result['n']} images "
          f"(loss {result['loss']:.4f}, model {result['model']}, dataset {result['dataset']})")
    return 0


def cmd_attack(args):
    from .experiment import attack_checkpoint
    from .train import write_json
    result = attack_checkpoint(args.checkpoint, attack=args.attack, eps=args.eps, alpha=args.alpha,
                               steps=args.steps, restarts=args.restarts, norm=args.norm, loss=args.loss,
                               eot_samples=args.eot_samples, data_dir=args.data_dir, device=args.device,
                               limit=args.limit, checks=not args.no_checks, progress=not args.quiet)
    print(f"{result['attack']} (norm {result['norm']}, eps {result['eps']:.4g}, alpha {result['alpha']:.4g}, "
          f"{result['steps']} steps, {result['restarts']} restarts) on {result['n']} test images: "
          f"clean {result['clean_accuracy']:.4f}, robust {result['robust_accuracy']:.4f}")
    for warning in result.get("warnings", []):
        print(f"warning: {warning}")
    if args.json:
        write_json(args.json, result)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m minidl", description="minidl command line")
    sub = parser.add_subparsers(dest="command", required=True)
    from .models import MODELS
    info = sub.add_parser("info", help="versions, backends and BLAS")
    info.add_argument("--warm-up", choices=sorted(MODELS), default=None,
                      help="run one training step of this model, then print the convolution algorithms chosen")
    info.add_argument("--batch", type=_positive(int, "--batch"), default=128)
    info.set_defaults(run=cmd_info)
    train = sub.add_parser("train", help="train a model on MNIST or CIFAR-10")
    train.add_argument("--dataset", choices=["mnist", "cifar10"], required=True)
    train.add_argument("--model", choices=sorted(MODELS), required=True)
    train.add_argument("--epochs", type=_positive(int, "--epochs"), default=3)
    train.add_argument("--batch-size", type=_positive(int, "--batch-size"), default=128)
    train.add_argument("--lr", type=_positive(float, "--lr"), default=None,
                       help="learning rate (default: 1e-3 for adam, 0.05 for sgd)")
    train.add_argument("--optimizer", choices=["sgd", "adam"], default=None,
                       help="default: adam on mnist, sgd (momentum 0.9, nesterov) on cifar10")
    train.add_argument("--schedule", choices=["constant", "cosine", "onecycle", "cyclic", "step"], default=None,
                       help="default: cyclic with --adv fgsm, else cosine for adam, onecycle for sgd")
    train.add_argument("--device", default="cpu")
    train.add_argument("--data-dir", default=None)
    train.add_argument("--out", required=True)
    train.add_argument("--seed", type=_positive(int, "--seed"), default=0)
    train.add_argument("--resume", action="store_true")
    train.add_argument("--adv", choices=["none", "pgd", "fgsm"], default="none",
                       help="adversarial training: Madry PGD or fast FGSM with random start")
    train.add_argument("--eps", type=_positive(float, "--eps"), default=0.3)
    train.add_argument("--alpha", type=_positive(float, "--alpha"), default=None)
    train.add_argument("--steps", type=_positive(int, "--steps"), default=40)
    train.add_argument("--eps-warmup", type=_positive(float, "--eps-warmup"), default=0.0,
                       help="epochs over which the training eps (and alpha) grow linearly from 0")
    train.add_argument("--init", choices=["default", "he", "fan_in_uniform"], default="default",
                       help="re-initialise the model: he (normal, zero bias) or fan_in_uniform "
                            "(PyTorch's default); default keeps the zoo model's own")
    train.add_argument("--train-limit", type=_positive(int, "--train-limit"), default=None,
                       help="use only the first N training images (quick runs)")
    train.add_argument("--holdout", type=_positive(int, "--holdout"), default=0,
                       help="hold out the last N training images as a validation set")
    train.add_argument("--no-augment", action="store_true", help="no crop/flip augmentation on cifar10")
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(run=cmd_train)

    ev = sub.add_parser("eval", help="accuracy of a checkpoint on its dataset's test set")
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("--data-dir", default=None)
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--split", choices=["test", "holdout"], default="test")
    ev.add_argument("--limit", type=_positive(int, "--limit"), default=None)
    ev.add_argument("--quiet", action="store_true")
    ev.set_defaults(run=cmd_eval)

    at = sub.add_parser("attack", help="clean and robust accuracy of a checkpoint under FGSM or PGD")
    at.add_argument("--checkpoint", required=True)
    at.add_argument("--attack", choices=["fgsm", "pgd"], default="pgd")
    at.add_argument("--eps", type=_positive(float, "--eps"), default=0.3)
    at.add_argument("--alpha", type=_positive(float, "--alpha"), default=None, help="default 2.5 * eps / steps")
    at.add_argument("--steps", type=_positive(int, "--steps"), default=50)
    at.add_argument("--restarts", type=_positive(int, "--restarts"), default=1)
    at.add_argument("--norm", choices=["inf", "2"], default="inf")
    at.add_argument("--loss", choices=["ce", "margin"], default="ce")
    at.add_argument("--eot-samples", type=_positive(int, "--eot-samples"), default=1)
    at.add_argument("--data-dir", default=None)
    at.add_argument("--device", default="cpu")
    at.add_argument("--limit", type=_positive(int, "--limit"), default=None)
    at.add_argument("--no-checks", action="store_true", help="skip the sanity checks")
    at.add_argument("--json", default=None, help="also write the result to this JSON file")
    at.add_argument("--quiet", action="store_true")
    at.set_defaults(run=cmd_attack)

    try:
        from .study import add_study_parser
        add_study_parser(sub)
    except ImportError:
        pass
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (UsageError, ValueError, FileNotFoundError, KeyError, RuntimeError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        if os.environ.get("MINIDL_DEBUG"):
            raise
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
