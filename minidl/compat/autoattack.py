"""AutoAttack's (Croce and Hein 2020, the ``autoattack`` package) interface over
:func:`minidl.adversarial.autoattack`:

    adversary = AutoAttack(model, norm='Linf', eps=8/255, version='standard')
    x_adv = adversary.run_standard_evaluation(x_test, y_test, bs=250)

``run_standard_evaluation`` attacks (x_test, y_test) in batches of ``bs``, prints the clean
accuracy, the robust accuracy after each stage and at the end (as AutoAttack does), and
returns the adversarial images, a Tensor (x where every stage failed).

* norm 'Linf' or 'L2' ('L1' is not ported);
* version 'standard' (APGD-CE, APGD-T, FAB-T, Square with AutoAttack's settings), 'rand'
  (APGD-CE and APGD-DLR, each gradient averaged over 20 passes) or 'custom' (the stages named
  by ``attacks_to_run``: any of 'apgd-ce', 'apgd-dlr', 'apgd-t', 'fab-t', 'square');
  assigning ``adversary.attacks_to_run = [...]`` afterwards picks the stages too, as there;
* seed None means 0 (AutoAttack's own draws one from the clock), so runs repeat;
* ``device`` is accepted and unused: the attack runs where the model's parameters are.

Not ported: version 'plus', untargeted 'fab', TensorFlow models, and the per-attack settings
objects (``adversary.apgd.n_restarts = ...``).
"""
from .. import backend
from ..adversarial import StageLog, autoattack
from ..adversarial.attacks import prepare_inputs
from ..adversarial.autoattack import STAGE_NAMES, VERSION_STAGES
from ..adversarial.evaluate import predict
from ..tensor import Tensor
from ..validation import check_number

__all__ = ["AutoAttack"]

NORMS = {"Linf": "inf", "L2": "2"}


class AutoAttack:
    """AutoAttack's constructor, arguments and defaults; see the module docstring."""

    def __init__(self, model, norm="Linf", eps=.3, seed=None, verbose=True, attacks_to_run=(), version="standard",
                 is_tf_model=False, device="cuda", log_path=None):
        if not callable(model):
            raise TypeError(f"AutoAttack: model must be a callable minidl Module, got {type(model).__name__}")
        if norm not in NORMS:
            raise ValueError(f"AutoAttack: norm must be 'Linf' or 'L2', got {norm!r}")
        check_number("AutoAttack: eps", eps, minimum=0)
        if seed is not None:
            check_number("AutoAttack: seed", seed, minimum=0, integer=True)
        if version not in ("standard", "rand", "custom"):
            raise ValueError(f"AutoAttack: version must be 'standard', 'rand' or 'custom', got {version!r}")
        if is_tf_model:
            raise ValueError("AutoAttack: is_tf_model=True is not supported (minidl attacks minidl models)")
        if log_path is not None and not isinstance(log_path, str):
            raise TypeError(f"AutoAttack: log_path must be a path string or None, got {type(log_path).__name__}")
        self.model, self.norm, self.eps, self.seed, self.verbose = model, norm, eps, seed, verbose
        self.version, self.device, self.log_path = version, device, log_path
        if version != "custom" and list(attacks_to_run):
            raise ValueError(f"AutoAttack: attacks_to_run is used with version='custom' only (version {version!r} "
                             f"sets its own), got {list(attacks_to_run)!r}")
        if version == "custom":
            self.attacks_to_run = _stage_names(attacks_to_run)
        else:
            self.attacks_to_run = list(VERSION_STAGES[version])
            self._log(f"using {version} version including {', '.join(self.attacks_to_run)}.")

    def _log(self, line):
        if self.verbose:
            print(line)
        if self.log_path is not None:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    def run_standard_evaluation(self, x_orig, y_orig, bs=250, return_labels=False):
        """The adversarial images of (x_orig, y_orig) (and, with ``return_labels``, the model's
        predictions on them), attacked ``bs`` at a time; prints the accuracies as it goes."""
        check_number("run_standard_evaluation: bs", bs, minimum=1, integer=True)
        names = _stage_names(self.attacks_to_run)
        x, y = prepare_inputs(self.model, x_orig, y_orig, "run_standard_evaluation")
        xp = backend.get_array_module(x.array)
        version = "rand" if self.version == "rand" else "standard"
        log, parts = StageLog(), []
        for start in range(0, len(y), bs):
            parts.append(autoattack(self.model, Tensor(x.array[start:start + bs]), Tensor(y.array[start:start + bs]), self.eps,
                                    norm=NORMS[self.norm], version=version, seed=0 if self.seed is None else self.seed,
                                    log=log, attacks=names).array)
        x_adv = Tensor(xp.concatenate(parts) if parts else x.array.copy())
        rows, total = log.rows(), 0.0
        for row in rows:
            total += row["seconds"]
            if row["stage"] == "clean":
                self._log(f"initial accuracy: {row['robust_accuracy']:.2%}")
            else:
                self._log(f"robust accuracy after {row['stage'].upper()}: {row['robust_accuracy']:.2%} "
                          f"(total time {total:.1f} s)")
        delta = (x_adv.array - x.array).reshape(len(y), -1)
        size = xp.abs(delta).max(axis=1) if self.norm == "Linf" else xp.sqrt((delta.astype(xp.float64) ** 2).sum(1))
        self._log(f"max {self.norm} perturbation: {float(size.max()) if len(y) else 0.0:.5f}, "
                  f"nan in tensor: {int(xp.isnan(x_adv.array).sum())}, "
                  f"max/min value: {float(x_adv.array.max()):.6f}/{float(x_adv.array.min()):.6f}")
        robust = rows[-1]["robust_accuracy"] if rows else float("nan")
        self._log(f"robust accuracy: {robust:.2%}")
        if return_labels:
            return x_adv, Tensor(backend.to_device(predict(self.model, x_adv), backend.device_of(x.array)))
        return x_adv


def _stage_names(attacks):
    """``attacks`` checked against the stages minidl has, as a list."""
    if isinstance(attacks, str) or not hasattr(attacks, "__iter__"):
        raise TypeError(f"AutoAttack: attacks_to_run must be a list of attack names, got {attacks!r}")
    names = list(attacks)
    unknown = [a for a in names if a not in STAGE_NAMES]
    if unknown or not names:
        raise ValueError(f"AutoAttack: attacks_to_run must be a non-empty list of {list(STAGE_NAMES)} "
                         f"('fab' untargeted is not ported), got {names!r}")
    return names
