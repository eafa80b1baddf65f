"""One preset over several seeds (``study --seeds 0,1,2``): every verdict as "reproduces in k of n
seeds", every number as its mean and range over the seeds, and the verdict table the study prints
at its end (one seed is the case n = 1).

Each seed's run is an ordinary study run in ``<out>/seed-<seed>`` (so it reuses what that seed
finished before, see ``stages.py``); ``<out>/report.md`` and ``<out>/metrics.json`` hold the
aggregate. Aggregating only reads the seeds' metrics, so it is tested on constructed ones.

The landscape rows are aggregated by (measure, norm, fraction) whatever the measures are: a measure
that joins ``minidl.adversarial.landscape.MEASURES`` gets the same per-seed treatment here with no
change, and so does the input-Hessian curvature (norm "-", one row taken at the image), which the
report also states on a line of its own.
"""
import os
import textwrap

import numpy

from ..io import atomic_write
from .report import (NO_BALL, NOT_JUDGED, _ball, _num, _pct, claims, definition_key, definition_label, definition_outcome,
                     row_verdict, verdict)

SPLIT = "depends on the seed"
REPRODUCES = "reproduces"


def seed_folder(out_dir, seed):
    """The run folder of one seed inside a several-seed study folder."""
    return os.path.join(out_dir, f"seed-{seed}")


def spread(values):
    """mean, min, max and count of the finite numbers among ``values`` (None where there are none)."""
    v = numpy.asarray([x for x in values if isinstance(x, (int, float)) and not isinstance(x, bool)],
                      dtype=numpy.float64)
    v = v[numpy.isfinite(v)]
    if not len(v):
        return {"mean": None, "min": None, "max": None, "n": 0}
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}


def seed_verdict(outcomes):
    """The words of the verdict over seeds: the common outcome when every seed agrees; the judged
    seeds' common outcome, with how many could not judge, when only NOT_JUDGED disagrees; else SPLIT."""
    outcomes = list(outcomes)
    kinds = set(outcomes)
    if len(kinds) == 1:
        return kinds.pop()
    judged = kinds - {NOT_JUDGED}
    if len(judged) == 1:
        missing = sum(1 for o in outcomes if o == NOT_JUDGED)
        return f"{judged.pop()} where judged (not judged in {missing} of {len(outcomes)} seeds)"
    return SPLIT


def tally(outcomes):
    """{"outcomes": each seed's, "reproduces": how many say REPRODUCES, "n", "verdict", "counts"}."""
    outcomes = list(outcomes)
    counts = {}
    for o in outcomes:
        counts[o] = counts.get(o, 0) + 1
    return {"outcomes": outcomes, "reproduces": sum(1 for o in outcomes if o == REPRODUCES), "n": len(outcomes),
            "verdict": seed_verdict(outcomes), "counts": counts}


def numeric_leaves(obj, prefix=""):
    """{"a.b.0.c": number} for every int or float (not bool) inside nested dicts and lists."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(numeric_leaves(v, f"{prefix}{k}."))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(numeric_leaves(v, f"{prefix}{i}."))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix[:-1]] = obj
    return out


def aggregate(per_seed):
    """The aggregate of ``per_seed`` ({seed: metrics of :func:`minidl.study.run_study`}): the claims
    (each with its tally over seeds and its numbers' spread), every spectrum definition's and
    landscape row's verdicts over seeds, and every number common to all seeds as mean and range."""
    if not per_seed:
        raise ValueError("aggregate: expected the metrics of at least one seed, got none")
    seeds = list(per_seed)
    metrics = [per_seed[s] for s in seeds]
    first = metrics[0]
    per_claims = [{c["claim"]: c for c in claims(m)} for m in metrics]
    # Claims are matched by name: a seed whose run lacks a claim (say, no spectrum stage) counts
    # as not judging it, and never shifts the claims after it onto the wrong ones.
    names = list(dict.fromkeys(name for cs in per_claims for name in cs))
    out_claims = []
    for name in names:
        same = [cs.get(name) for cs in per_claims]
        c = next(x for x in same if x is not None)
        # Only a verdict can go unjudged; a count or a visual claim has no verdict of its own.
        absent = NOT_JUDGED if c["kind"] == "verdict" else c["outcome"]
        outcomes = [absent if x is None else x["outcome"] for x in same]
        keys = list(dict.fromkeys(k for x in same if x is not None for k in x["numbers"]))
        if c["kind"] == "count":
            # A count a seed does not list is a count of 0 (no row of that kind), not a missing number.
            numbers = {k: spread([x["numbers"].get(k, 0) for x in same if x is not None]) for k in keys}
        else:
            numbers = {k: spread([x["numbers"].get(k) if x is not None else None for x in same]) for k in keys}
        out_claims.append({"claim": name, "kind": c["kind"], **tally(outcomes), "numbers": numbers})
    result = {"seeds": seeds, "dataset": first["dataset"], "preset": first.get("preset"), "claims": out_claims,
              "landscape": _landscape(metrics), "spectrum": _spectrum(metrics)}
    result["accuracy"] = _accuracy(metrics)
    leaves = [numeric_leaves(m) for m in metrics]
    common = [k for k in leaves[0] if all(k in x for x in leaves[1:])]
    result["numbers"] = {k: spread([x[k] for x in leaves]) for k in common}
    return result


def _accuracy(metrics):
    """{model: {column: spread}} of the accuracy table's numbers (clean, each attack)."""
    out = {}
    for name, row in metrics[0].get("accuracy", {}).get("rows", {}).items():
        cols = [k for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        out[name] = {k: spread([m["accuracy"]["rows"].get(name, {}).get(k) for m in metrics]) for k in cols}
    return out


def _landscape(metrics):
    rows = {}
    for m in metrics:
        for row in m.get("landscape", {}).get("rows", []):
            key = f"{row['measure']} / L{row['norm']} / fraction {row['fraction']:g}"
            entry = rows.setdefault(key, {"measure": row["measure"], "norm": row["norm"], "radius": row["radius"],
                                          "fraction": row["fraction"], "verdicts": [], "difference": [],
                                          "natural": [], "adversarial": []})
            entry["verdicts"].append(row_verdict(row))
            for k in ("difference", "natural", "adversarial"):
                entry[k].append(row[k]["mean"])
    return [{**{k: v for k, v in e.items() if k not in ("verdicts", "difference", "natural", "adversarial")},
             **tally(e["verdicts"]), **{k: spread(e[k]) for k in ("difference", "natural", "adversarial")}}
            for e in rows.values()]


def _spectrum(metrics):
    if not all(m.get("spectrum") for m in metrics):
        return None
    out = {}
    for name in metrics[0]["spectrum"]["models"]:
        rows = {}
        for m in metrics:
            for d in m["spectrum"]["models"][name]:
                o = definition_outcome(m["dataset"], d)
                e = rows.setdefault(definition_key(d), {"label": definition_label(d), "spectrum": [], "uap": [],
                                                        "s1_s2": [], "s1_s5": [], "v1_fooling": [],
                                                        "random_fooling": []})
                e["spectrum"].append(verdict(o["spectrum"]))
                e["uap"].append(verdict(o["uap"]))
                for k in ("s1_s2", "s1_s5", "v1_fooling", "random_fooling"):
                    e[k].append(d["summary"][k]["median"])
        out[name] = {key: {"label": e["label"], "spectrum": tally(e["spectrum"]), "uap": tally(e["uap"]),
                           **{k: spread(e[k]) for k in ("s1_s2", "s1_s5", "v1_fooling", "random_fooling")}}
                     for key, e in rows.items()}
    return out


def mean_range(s, digits=2, percent=False, of=None, count=False):
    """"mean [min, max]" of a :func:`spread` (the mean alone for one seed, "-" for none); with
    ``of`` (the number of seeds) it says when fewer seeds than that had the number. Numbers that are
    whole in every seed print without decimals; so does a ``count``'s range when its mean is not."""
    if s is None or s["mean"] is None:
        return "-"
    whole = all(float(x).is_integer() for x in (s["mean"], s["min"], s["max"]))

    def f(x):
        if percent:
            return _pct(x)
        return f"{x:.0f}" if whole or (count and float(x).is_integer()) else _num(x, digits)

    text = f(s["mean"]) if s["n"] <= 1 or s["min"] == s["max"] else f"{f(s['mean'])} [{f(s['min'])}, {f(s['max'])}]"
    return text + (f" ({s['n']} of {of} seeds)" if of is not None and s["n"] < of else "")


def _g3(s):
    """"mean [min, max]" of a :func:`spread` to 3 significant digits (curvatures span decades)."""
    if s is None or s["mean"] is None:
        return "-"
    same = s["n"] <= 1 or s["min"] == s["max"]
    return f"{s['mean']:.3g}" if same else f"{s['mean']:.3g} [{s['min']:.3g}, {s['max']:.3g}]"


def k_of_n(t):
    """"k of n seeds" for a tally, followed by the other outcomes unless every other seed plainly
    does not reproduce (so "0 of 3 seeds" never hides seeds that could not judge the claim)."""
    text = f"{t['reproduces']} of {t['n']} seed{'s' if t['n'] != 1 else ''}"
    others = {o: c for o, c in t["counts"].items() if o != REPRODUCES}
    plain_no = len(others) == 1 and next(iter(others)).startswith("does not reproduce")
    if others and (t["reproduces"] or not plain_no):
        text += " (" + "; ".join(f"{o}: {c}" for o, c in others.items()) + ")"
    return text


def _claim_cells(c):
    """(verdict, k of n) cells of one aggregated claim: a count gives its numbers' means."""
    if c["kind"] == "visual":
        return "visual claim, not judged", "-"
    if c["kind"] == "count":
        return "; ".join(f"{k} {mean_range(v, 1, of=c['n'], count=True)}" for k, v in c["numbers"].items()), "-"
    return c["verdict"], k_of_n(c)


def verdict_table(agg):
    """The rows (claim, verdict, k of n seeds) of the aggregated claims."""
    return [(c["claim"], *_claim_cells(c)) for c in agg["claims"]]


def print_verdicts(agg, report_path):
    """Print the verdict table and the report's path (the study's last words). A long claim or
    verdict wraps onto lines of its own rather than being cut, so every word reaches the terminal."""
    rows = [("claim", "verdict", "reproduces in")] + verdict_table(agg)
    w0 = min(max(len(r[0]) for r in rows), 70)
    w1 = min(max(len(r[1]) for r in rows), 60)
    print(f"\n[study] verdicts ({agg['dataset']}, preset {agg['preset']}, seeds {', '.join(map(str, agg['seeds']))}):")
    for claim, word, k in rows:
        left, mid = textwrap.wrap(claim, w0) or [""], textwrap.wrap(word, w1) or [""]
        for i in range(max(len(left), len(mid))):
            a = left[i] if i < len(left) else ""
            b = mid[i] if i < len(mid) else ""
            print(f"  {a:<{w0}}  {b:<{w1}}  {k if i == 0 else ''}".rstrip())
    print(f"[study] report: {report_path}", flush=True)


def write_seeds_report(path, agg, command, seconds, reports):
    """``report.md`` of a several-seed study: the verdicts over seeds, the spectrum definitions,
    the landscape rows, the accuracy table as mean [range]; links to each seed's report."""
    n = len(agg["seeds"])
    lines = [f"# minidl robustness study: {agg['dataset']}, preset {agg['preset']}, seeds "
             f"{', '.join(map(str, agg['seeds']))}", "",
             f"Produced by `{command}` in {seconds / 60:.1f} minutes (this run; a seed's stages finished earlier "
             "were reused). Each seed is a whole study run with its own report: "
             + ", ".join(f"[seed {s}]({os.path.relpath(r, os.path.dirname(path))})" for s, r in reports.items())
             + ". A verdict *reproduces in k of n seeds*; a number is the mean over the seeds with [min, max]. "
               "`metrics.json` holds the aggregate of every number (`aggregate.numbers`).", "",
             "## The talk's claims over seeds", "", "| claim | verdict over seeds | reproduces in | numbers |",
             "| --- | --- | --- | --- |"]
    for c in agg["claims"]:
        word, k = _claim_cells(c)
        nums = "; ".join(f"{name} {mean_range(s, 3, of=n)}" for name, s in c["numbers"].items()) \
            if c["kind"] != "count" else ""
        lines.append(f"| {c['claim']} | {word} | {k} | {nums} |")
    if agg.get("spectrum"):
        models = list(agg["spectrum"])
        lines += ["", "## Spectrum sensitivity over seeds", "",
                  "Each definition's verdict (the talk's spectrum by the median over its matrices) in how many seeds; "
                  "its median s1/s2 and s1/s5 and the median fooling rates of v1 and of a random direction, each as "
                  "mean [range] over seeds; and in how many seeds v1 beats the random direction.", "",
                  "| definition | " + " | ".join(f"{m}: talk's spectrum | {m}: s1/s2 | {m}: s1/s5 | {m}: v1 / random | "
                                                 f"{m}: v1 beats random" for m in models) + " |",
                  "| --- " * (1 + 5 * len(models)) + "|"]
        for key in agg["spectrum"][models[0]]:
            cells = []
            for m in models:
                e = agg["spectrum"][m].get(key)
                cells += ["-"] * 5 if e is None else [
                    k_of_n(e["spectrum"]), mean_range(e["s1_s2"], of=n), mean_range(e["s1_s5"], of=n),
                    f"{mean_range(e['v1_fooling'], percent=True, of=n)} / "
                    f"{mean_range(e['random_fooling'], percent=True, of=n)}",
                    k_of_n(e["uap"])]
            lines.append(f"| {agg['spectrum'][models[0]][key]['label']} | " + " | ".join(cells) + " |")
    if agg["landscape"]:
        lines += ["", "## Loss landscape over seeds", "",
                  "Each row's verdict (the paired difference adversarial - natural against 2 standard errors, as in "
                  "a seed's report) in how many seeds, and the difference's mean [range] over seeds.", "",
                  "| measure | ball | adversarial smoother in | verdicts | difference |",
                  "| --- | --- | --- | --- | --- |"]
        for r in agg["landscape"]:
            counts = "; ".join(f"{o}: {c}" for o, c in r["counts"].items())
            lines.append(f"| `{r['measure']}` | {_ball(r)} | {r['reproduces']} of {r['n']} | {counts} | "
                         f"{mean_range(r['difference'], 3)} |")
        ok = sum(1 for r in agg["landscape"] if r["reproduces"] == r["n"])
        never = sum(1 for r in agg["landscape"] if r["reproduces"] == 0)
        lines += ["", f"{len(agg['landscape'])} rows: the adversarial model is smoother in every seed in {ok}, in no "
                      f"seed in {never}, in some seeds in {len(agg['landscape']) - ok - never}."]
        for r in agg["landscape"]:
            if r["norm"] == NO_BALL:
                lines += ["", f"Curvature (`{r['measure']}`, at the image; lower is smoother): the adversarial model is "
                              f"smoother in {k_of_n(r)}; mean over images natural {_g3(r['natural'])}, adversarial "
                              f"{_g3(r['adversarial'])}, difference {_g3(r['difference'])} (mean [min, max] over "
                              "seeds)."]
    if agg.get("accuracy"):
        lines += ["", "## Accuracy over seeds", "", "| model / attack | accuracy, mean [min, max] over seeds |",
                  "| --- | --- |"]
        lines += [f"| {name}: {k} | {mean_range(v, percent=True)} |"
                  for name, cols in agg["accuracy"].items() for k, v in cols.items()]
    lines += ["", f"{n} seed(s). A seed whose numbers could not judge a claim counts as \"{NOT_JUDGED}\", an outcome "
                  "of its own, never as a reproduction."]
    with atomic_write(path) as f:
        f.write("\n".join(lines) + "\n")
