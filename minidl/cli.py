"""The ``python -m minidl`` command line.

Exit codes: 0 success; 2 a user error (bad argument, missing or malformed file, a folder that
holds another run, a diverged training run), reported as one line ``error: ...``; 1 an
internal error (a bug), reported as one line too; ``--debug`` (or ``MINIDL_DEBUG=1``) shows the
traceback instead; 130 interrupted (Ctrl-C, or SIGTERM: both unwind the same way, so locks are
released and no half-written file is left).
"""
import argparse
import contextlib
import os
import pickle
import signal
import sys
import threading

import traceback

import numpy

from . import distributed
from .adversarial.journal import discard_journal, journal_path
from .experiment import (ADVERSARIES, AttackConfig, TrainConfig, attack_checkpoint, evaluate_checkpoint,
                         held_by_root, run_training)
from .info import MAX_WARM_UP_BATCH, describe, warm_up
from .io import check_atomic_writable, write_json
from .models import MODELS
from .run_folder import locked_file
from .study import PRESETS, run_seeds
from .validation import check_number, check_writable_file, check_writable_folder


# The journal of an unfinished ``attack --json FILE`` is FILE + this.
JOURNAL_SUFFIX = ".partial"


class UsageError(Exception):
    """A mistake in the command line, reported as one line."""


# Exceptions that report a problem with the user's input, files or settings (exit 2). Anything
# else is a bug in minidl (exit 1).
USER_ERRORS = (UsageError, ValueError, TypeError, KeyError, OSError, pickle.UnpicklingError, RuntimeError)
INTERNAL_ERRORS = (NotImplementedError, RecursionError)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage text is what --help is for)."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def cmd_info(args):
    print(describe())
    if args.warm_up:
        print("\n".join(warm_up(args.warm_up, args.batch)))
    return 0


def number(kind, name, **limits):
    """An argparse ``type``: text -> ``kind`` (int or float), then ``check_number(name, ...)``."""
    integer = kind is int

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if integer else 'a number'}, "
                                             f"got {text!r}") from None
        try:
            return check_number(name, value, integer=integer, **limits)
        except (TypeError, ValueError) as e:
            raise argparse.ArgumentTypeError(str(e).split(": ", 1)[1]) from None  # argparse names the option
    parse.__name__ = name  # argparse says "invalid <name> value" for other failures
    return parse


def path(kind):
    """An argparse ``type`` for a folder or file path: the empty string is refused (it would
    silently mean the current folder, or nothing at all)."""
    def parse(text):
        if not text:
            raise argparse.ArgumentTypeError(f"expected a {kind} path, got ''")
        return text
    return parse


def cmd_train(args):
    config = TrainConfig(dataset=args.dataset, model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                         lr=args.lr, optimizer=args.optimizer, schedule=args.schedule, device=args.device,
                         data_dir=args.data_dir, seed=args.seed, adv=args.adv, eps=args.eps, alpha=args.alpha,
                         steps=args.steps, train_limit=args.train_limit, holdout=args.holdout,
                         augment=not args.no_augment, init=args.init, eps_warmup=args.eps_warmup,
                         noise=args.noise, grad_align=args.grad_align)
    # Overflows are reported once, by the divergence guard, not as a warning per operation.
    with numpy.errstate(over="ignore", invalid="ignore"):
        run_training(config, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    return 0


def cmd_eval(args):
    result = evaluate_checkpoint(args.checkpoint, data_dir=args.data_dir, device=args.device,
                                 split=args.split, limit=args.limit, progress=not args.quiet)
    if not distributed.world().is_root:
        return 0
    print(f"{result['split']} accuracy: {result['accuracy']:.4f} on {result['n']} images "
          f"(loss {result['loss']:.4f}, model {result['model']}, dataset {result['dataset']})")
    return 0


def cmd_attack(args):
    config = AttackConfig(checkpoint=args.checkpoint, attack=args.attack, eps=args.eps, alpha=args.alpha,
                          steps=args.steps, restarts=args.restarts, norm=args.norm, loss=args.loss,
                          eot_samples=args.eot_samples, data_dir=args.data_dir, device=args.device, limit=args.limit,
                          batch_size=args.batch_size, checks=not args.no_checks, version=args.version,
                          seed=args.seed, judge_samples=args.judge_samples).resolved()
    if args.json is None:
        if args.resume:
            raise ValueError("--resume: expected --json FILE (the run's journal is FILE.partial), got no --json")
        return _attack(args, config, None)
    # Before the attack runs, not after: the file, and the temporary files that write it and its
    # journal atomically, can be created (a long name fits while its temporary name does not).
    check_writable_file("--json", args.json)
    comm = distributed.world()
    journal = args.json + JOURNAL_SUFFIX
    for name in (args.json, journal_path(journal, comm.size, comm.rank)):
        check_atomic_writable("--json", name)
    # FILE.lock: a second attack writing FILE is refused rather than silently replacing its result
    journals = [journal_path(journal, comm.size, rank) for rank in range(comm.size)]
    with held_by_root(lambda: locked_file(args.json, related=journals)):
        return _attack(args, config, journal)


def _attack(args, config, journal):
    result = attack_checkpoint(config, journal=journal, resume=args.resume, progress=not args.quiet)
    comm = distributed.world()
    stored, failure = False, None
    if comm.is_root:  # every rank holds the gathered result; one reports it
        try:
            report_attack(args, result)
            stored = True
        except Exception as e:  # the other ranks must still hear of it, or they would wait forever
            failure = e
    # every rank keeps its journal until the result is on disk; a failed write keeps them all
    if journal is not None and comm.broadcast_object(stored):
        discard_journal(journal, comm.size, comm.rank)
    if failure is not None:
        raise failure
    return 0


def report_attack(args, result):
    """Print the result of ``attack`` and write its JSON."""
    if result["attack"] == "autoattack":
        print(f"autoattack {result['version']} (norm {result['norm']}, eps {result['eps']:.4g}) on {result['n']} "
              f"test images: clean {result['clean_accuracy']:.4f}, robust {result['robust_accuracy']:.4f}")
        for row in result["breakdown"]:
            print(f"  after {row['stage']:<9} {row['robust_accuracy']:.4f}  ({row['seconds']:.1f} s)")
    else:
        print(f"{result['attack']} (norm {result['norm']}, eps {result['eps']:.4g}, alpha {result['alpha']:.4g}, "
              f"{result['steps']} steps, {result['restarts']} restarts) on {result['n']} test images: "
              f"clean {result['clean_accuracy']:.4f}, robust {result['robust_accuracy']:.4f}")
    if result["judge_samples"] > 1:
        print(f"  (points judged by {result['judged_by']})")
    for warning in result.get("warnings", []):
        print(f"warning: {warning}")
    if args.json is not None:
        write_json(args.json, result)


def cmd_study(args):
    if args.seeds is not None and args.seed is not None:
        raise ValueError(f"study: give --seed or --seeds, not both (got --seed {args.seed} and --seeds "
                         f"{','.join(map(str, args.seeds))})")
    check_writable_folder("--out", args.out)  # before any data is loaded or model trained
    run_seeds(args.dataset, args.preset, args.seeds, args.device, args.data_dir, args.out, progress=not args.quiet,
              seed=args.seed or 0)
    return 0


def seed_list(text):
    """An argparse ``type`` for --seeds: distinct non-negative integers separated by commas."""
    parts = [t.strip() for t in text.split(",")]
    if not all(t.isdecimal() for t in parts):
        raise argparse.ArgumentTypeError(f"expected non-negative integers separated by commas, e.g. 0,1,2; "
                                         f"got {text!r}")
    seeds = [int(t) for t in parts]
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct seeds, got {text!r}")
    return seeds


def build_parser():
    parser = _Parser(prog="python -m minidl", description="minidl command line")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    info = sub.add_parser("info", help="versions, backends and BLAS")
    info.add_argument("--warm-up", choices=sorted(MODELS), default=None,
                      help="run one training step of this model, then print the convolution algorithms chosen")
    info.add_argument("--batch", type=number(int, "--batch", minimum=1, maximum=MAX_WARM_UP_BATCH), default=128)
    info.set_defaults(run=cmd_info)
    train = sub.add_parser("train", help="train a model on MNIST or CIFAR-10")
    train.add_argument("--dataset", choices=["mnist", "cifar10"], required=True)
    train.add_argument("--model", choices=sorted(MODELS), required=True)
    train.add_argument("--epochs", type=number(int, "--epochs", minimum=1), default=3)
    train.add_argument("--batch-size", type=number(int, "--batch-size", minimum=1), default=128)
    train.add_argument("--lr", type=number(float, "--lr", minimum=0, strict=True), default=None,
                       help="learning rate (default: 1e-3 for adam, 0.05 for sgd)")
    train.add_argument("--optimizer", choices=["sgd", "adam"], default=None,
                       help="default: adam on mnist, sgd (momentum 0.9, nesterov) on cifar10")
    train.add_argument("--schedule", choices=["constant", "cosine", "onecycle", "cyclic", "step"], default=None,
                       help="default: cyclic with --adv fgsm, else cosine for adam, onecycle for sgd")
    train.add_argument("--device", default="cpu")
    train.add_argument("--data-dir", default=None)
    train.add_argument("--out", type=path("folder"), required=True,
                       help="run folder; one that holds another run is refused (see --resume, --overwrite)")
    train.add_argument("--seed", type=number(int, "--seed", minimum=0), default=0)
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out: same settings, only --epochs may grow")
    train.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    train.add_argument("--adv", choices=list(ADVERSARIES), default="none",
                       help="adversarial training: Madry PGD, fast FGSM with random start, or "
                            "N-FGSM (larger noise, no projection)")
    train.add_argument("--eps", type=number(float, "--eps", minimum=0, strict=True), default=0.3)
    train.add_argument("--alpha", type=number(float, "--alpha", minimum=0, strict=True), default=None)
    train.add_argument("--steps", type=number(int, "--steps", minimum=1), default=40)
    train.add_argument("--noise", type=number(float, "--noise", minimum=0), default=None,
                       help="--adv nfgsm: radius of the random offset (default 2 x eps)")
    train.add_argument("--grad-align", type=number(float, "--grad-align", minimum=0), default=0.0, metavar="LAMBDA",
                       help="--adv fgsm/nfgsm: weight of the GradAlign penalty lambda (1 - cos of the input "
                            "gradients at x and x + uniform noise); 0: off")
    train.add_argument("--eps-warmup", type=number(float, "--eps-warmup", minimum=0), default=0.0,
                       help="epochs over which the training eps (and alpha) grow linearly from 0")
    train.add_argument("--init", choices=["default", "he", "fan_in_uniform"], default="default",
                       help="re-initialise the model: he (normal, zero bias) or fan_in_uniform "
                            "(PyTorch's default); default keeps the zoo model's own")
    train.add_argument("--train-limit", type=number(int, "--train-limit", minimum=1), default=None,
                       help="use only the first N training images (quick runs)")
    train.add_argument("--holdout", type=number(int, "--holdout", minimum=0), default=0,
                       help="hold out the last N training images as a validation set")
    train.add_argument("--no-augment", action="store_true", help="no crop/flip augmentation on cifar10")
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(run=cmd_train)

    ev = sub.add_parser("eval", help="accuracy of a checkpoint on its dataset's test set")
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("--data-dir", default=None)
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--split", choices=["test", "holdout"], default="test")
    ev.add_argument("--limit", type=number(int, "--limit", minimum=1), default=None)
    ev.add_argument("--quiet", action="store_true")
    ev.set_defaults(run=cmd_eval)

    at = sub.add_parser("attack", help="clean and robust accuracy of a checkpoint under FGSM, PGD or AutoAttack")
    at.add_argument("--checkpoint", required=True)
    at.add_argument("--attack", choices=["fgsm", "pgd", "autoattack"], default="pgd")
    at.add_argument("--version", choices=["standard", "rand"], default="standard",
                    help="AutoAttack's version: standard, or rand (EOT 20) for randomized models")
    at.add_argument("--seed", type=number(int, "--seed", minimum=0), default=0,
                    help="seed of the random starts, the model's noise and AutoAttack's stages")
    at.add_argument("--eps", type=number(float, "--eps", minimum=0, strict=True), default=0.3)
    at.add_argument("--alpha", type=number(float, "--alpha", minimum=0, strict=True), default=None,
                    help="default 2.5 * eps / steps")
    at.add_argument("--steps", type=number(int, "--steps", minimum=1), default=50)
    at.add_argument("--restarts", type=number(int, "--restarts", minimum=1), default=1)
    at.add_argument("--norm", choices=["inf", "2"], default="inf")
    at.add_argument("--loss", choices=["ce", "margin"], default="ce")
    at.add_argument("--eot-samples", type=number(int, "--eot-samples", minimum=1), default=1)
    at.add_argument("--judge-samples", type=number(int, "--judge-samples", minimum=1), default=None,
                    help="judge each point by the mean softmax of N passes; default 20 for a randomized "
                         "model (e.g. RSE), 1 otherwise")
    at.add_argument("--data-dir", default=None)
    at.add_argument("--device", default="cpu")
    at.add_argument("--limit", type=number(int, "--limit", minimum=1), default=None)
    at.add_argument("--batch-size", type=number(int, "--batch-size", minimum=1), default=500,
                    help="images attacked together (memory; the journal keeps one entry per batch)")
    at.add_argument("--no-checks", action="store_true", help="skip the sanity checks")
    at.add_argument("--json", type=path("file"), default=None,
                    help="also write the result to this JSON file; until then every finished batch is kept "
                         "in FILE.partial, so a stopped run loses nothing (see --resume)")
    at.add_argument("--resume", action="store_true",
                    help="continue the stopped run whose FILE.partial journal --json names (same settings)")
    at.add_argument("--quiet", action="store_true")
    at.set_defaults(run=cmd_attack)

    st = sub.add_parser("study", help="the robustness study: train, attack, UAP/SVD, landscape, report")
    st.add_argument("--dataset", choices=["mnist", "cifar10"], required=True)
    st.add_argument("--preset", choices=sorted({name for _, name in PRESETS}), default="quick",
                    help="quick (minutes on a CPU), standard (an hour or two on a CPU), full (a GPU)")
    st.add_argument("--device", default="cpu")
    st.add_argument("--data-dir", default=None)
    st.add_argument("--out", type=path("folder"), required=True)
    st.add_argument("--seed", type=number(int, "--seed", minimum=0), default=None, help="default 0")
    st.add_argument("--seeds", type=seed_list, default=None,
                    help="run the preset once per seed (e.g. 0,1,2) in OUT/seed-N and report each verdict as "
                         "'reproduces in k of n seeds'")
    st.add_argument("--quiet", action="store_true")
    st.set_defaults(run=cmd_study)
    return parser


def _one_line(error):
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(part.strip() for part in text.splitlines() if part.strip()) or type(error).__name__


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program stands so that it unwinds as Ctrl-C does."""


def _terminate(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def _sigterm_unwinds():
    """SIGTERM raises :class:`Terminated` while the command runs (the main thread only can
    take a signal handler; elsewhere, as under some test runners, it is left alone)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _join_mpi_job():
    """The world communicator: the MPI job's when a launcher started this process (its
    variables, e.g. ``PMI_SIZE``, say so), else the single process."""
    if not distributed.launched_by_mpi():
        return distributed.world()
    return distributed.init()


def main(argv=None):
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Under an MPI launcher (``mpirun -n N python -m minidl ...``) each process is one rank of the
    job; a rank that fails reports its one line (``error on rank r of N: ...``) and ends every
    rank at once (MPI abort): the others would otherwise wait forever in their next collective.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or bool(os.environ.get("MINIDL_DEBUG"))
    try:
        comm = _join_mpi_job()
    except Exception as e:  # noqa: BLE001 - e.g. PMI_SIZE set, but no mpi4py: one line, not a traceback
        if debug:
            raise
        print(f"error: this process was started as one rank of an MPI job, but cannot join it: {_one_line(e)}",
              file=sys.stderr, flush=True)
        return 2
    where = "error" if comm.size == 1 else f"error on rank {comm.rank} of {comm.size}"
    try:
        with _sigterm_unwinds():
            args = build_parser().parse_args([a for a in argv if a != "--debug"])
            code = args.run(args)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2), already printed
        code = e.code if isinstance(e.code, int) else 2
    except KeyboardInterrupt as e:
        print("terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted", file=sys.stderr)
        code = 130
    except Exception as e:  # noqa: BLE001 - the top of the program: everything becomes one line
        if debug and comm.size == 1:
            raise
        if debug:
            traceback.print_exc()
        if isinstance(e, USER_ERRORS) and not isinstance(e, INTERNAL_ERRORS):
            print(f"{where}: {_one_line(e)}", file=sys.stderr, flush=True)
            code = 2
        else:
            print(f"internal {where}: {type(e).__name__}: {_one_line(e)} (a bug in minidl; rerun with --debug "
                  "for the traceback)", file=sys.stderr, flush=True)
            code = 1
    if comm.size > 1:
        if code:
            comm.abort(code=code)
        comm.barrier()
    return code
