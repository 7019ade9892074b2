"""Detection quality on the labelled shared data: the default rule against the reference rule.

For every entity under ``../shared/data`` (ASD omi-1..8, SMD machine-1-6,
machine-2-1, machine-3-3) this runs the production path in a fresh ``file://``
lake: the training file is written as curated metrics, one group of all
metrics is trained with the reference model (its last 30 % held out for the
thresholds), the test file is scored in one run with the training rows as
context, ``combine`` builds the incidents, and the scores and incidents in the
lake are evaluated against the labels with :mod:`lstmae.evaluate`.

Three rules are compared on the same trained model per entity:

* ``default``: the configuration's threshold settings (the product default
  unless ``--threshold`` overrides them);
* ``reference``: the prototype's per-feature Gaussian, mean + 3 sigma of the
  validation errors, applied to each point (``threshold.method: reference``);
* ``reference-windows``: the same thresholds with the prototype's verdict, a
  non-overlapping window is anomalous when any point of any feature exceeds.

Writes ``bench/results/detection.json`` (or the ``--out`` file) and the tables
between the markers of ``docs/detection.md``.

Usage::

    python bench/detection.py [--epochs 20] [--entities omi-1 machine-2-1]
        [--threshold '{"quantile": 0.999}'] [--group '{"train_stride": 10}'] [--seeds 42 1 2] [--no-docs] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import re
import tempfile
import time

import common

common.quiet_tensorflow()

from lstmae import evaluate as ev  # noqa: E402
from lstmae.config import ThresholdConfig, config_from_dict  # noqa: E402
from lstmae.storage import LocalStorage  # noqa: E402

DATA = common.ROOT.parent / "shared" / "data"
ENTITIES = {f"omi-{i}": ("asd", "5min") for i in range(1, 9)}
ENTITIES.update({name: ("smd", "1min") for name in ("machine-1-6", "machine-2-1", "machine-3-3")})
DOCS = common.ROOT / "docs" / "detection.md"
BEGIN, END = "<!-- bench/detection.py: begin -->", "<!-- bench/detection.py: end -->"
COLUMNS = ("flagged_fraction", "point_f1", "best_f1", "point_adjusted_f1", "event_f1", "event_precision", "event_recall",
           "false_alarms_per_day", "delay_steps_mean", "auc_pr", "vus_pr", "hit_rate_100", "hit_rate_150")


def run_entity(name: str, epochs: int, threshold: dict, group_settings: dict | None = None, seed: int = 42) -> dict:
    """Backtest one entity; return ``{rule: report}`` plus ``training`` and ``seconds``.

    ``group_settings`` override the group's settings (``train_stride``,
    ``timesteps``, ``units``, ``model_type``); ``epochs`` and ``threshold``
    are applied after them. ``seed`` is the configuration's seed (initial
    weights and training order).
    """
    dataset, step = ENTITIES[name]
    group = {"name": "all", **(group_settings or {}), "epochs": epochs, "slo_percentiles": {}}
    if threshold:
        group["threshold"] = threshold
    config = config_from_dict({"step": step, "seed": seed, "groups": [group]})
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"lstmae-detection-{name}-") as directory:
        results = ev.backtest(DATA / dataset / name, LocalStorage(directory), config, name,
                              variants={"reference": ThresholdConfig(method="reference")})
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


def tables(results: dict) -> str:
    """Markdown: one table per rule (rows: entities and the mean)."""
    rules = [rule for rule in ("default", "reference", "reference-windows")
             if any(rule in entity for entity in results["entities"].values())]
    parts = []
    for rule in rules:
        summary = ev.summarise({name: entity[rule] for name, entity in results["entities"].items()})
        parts.append(f"#### {rule}\n\n" + ev.markdown_table(summary, COLUMNS))
    return "\n\n".join(parts)


def seed_table(results: dict) -> list[str]:
    """Markdown lines: the default rule's means over the entities for every seed run (none for one seed)."""
    runs = {str(results.get("seeds", [42])[0]): results["entities"], **results.get("other_seeds", {})}
    if len(runs) < 2:
        return []
    columns = ("point_f1", "best_f1", "event_f1", "false_alarms_per_day", "auc_pr", "vus_pr", "hit_rate_150")
    lines = ["#### default, mean over the entities, per seed", "",
             "| seed | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for seed, entities in runs.items():
        mean = ev.summarise({name: entity["default"] for name, entity in entities.items()})["mean"]
        cells = ("" if mean[column] is None else f"{mean[column]:.3f}" for column in columns)
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    return lines + [""]


def write_docs(results: dict, command: str) -> None:
    machine = results["machine"]
    block = "\n".join([
        BEGIN,
        f"Measured {machine['date']} on {machine['cpu']} ({machine['cores']} cores, shared with other work), "
        f"TensorFlow {machine['tensorflow']}, {results['epochs']} epochs, seed {results.get('seeds', [42])[0]}, "
        f"{results['seconds'] / 60:.1f} minutes in all. Command:",
        "",
        f"    {command}",
        "",
        f"Threshold settings of `default`: `{json.dumps(results['default_threshold'])}`; incidents merge "
        f"anomalous points up to {results.get('incident_merge_steps', 30)} grid steps apart"
        + (f", and closed incidents of fewer than {results['min_incident_points']} points are dropped."
           if results.get("min_incident_points", 1) > 1 else "."),
        "",
        tables(results),
        "",
        *seed_table(results),
        END,
    ])
    text = DOCS.read_text(encoding="utf-8") if DOCS.exists() else f"# Detection quality\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text = text.rstrip("\n") + f"\n\n{BEGIN}\n{END}\n"
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    DOCS.write_text(pattern.sub(lambda _: block, text), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20, help="training epochs per entity (default 20)")
    parser.add_argument("--entities", nargs="*", default=list(ENTITIES), help="entities to run (default all 11)")
    parser.add_argument("--threshold", default="{}",
                        help="JSON of threshold settings for the default rule (default: the product default)")
    parser.add_argument("--group", default="{}",
                        help='JSON of group settings for every entity, e.g. \'{"train_stride": 10}\' (default: the product default)')
    parser.add_argument("--seeds", nargs="+", type=int, default=[42],
                        help="configuration seeds to run; the tables show the first, and a last table the mean "
                             "of every seed (default 42, the product default)")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/detection.md")
    parser.add_argument("--out", metavar="FILE", default=str(common.RESULTS / "detection.json"),
                        help="results file to write (default bench/results/detection.json, the one the docs render)")
    parser.add_argument("--from-json", metavar="FILE",
                        help="render docs/detection.md from an earlier results file instead of running")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.from_json:
        results = json.loads(open(args.from_json, encoding="utf-8").read())
        print(tables(results))
        print("\n".join(seed_table(results)))
        write_docs(results, results.get("command", "python bench/detection.py"))
        return
    unknown = sorted(set(args.entities) - set(ENTITIES))
    if unknown:
        parser.error(f"unknown entities {unknown}; choose from {list(ENTITIES)}")
    threshold = json.loads(args.threshold)
    group_settings = json.loads(args.group)
    started = time.monotonic()
    results = {"machine": common.machine(), "epochs": args.epochs, "seeds": args.seeds, "entities": {},
               "other_seeds": {}, "group_settings": group_settings,
               "default_threshold": threshold or ThresholdConfig().__dict__,
               "incident_merge_steps": config_from_dict({}).incident_merge_steps,
               "min_incident_points": config_from_dict({}).min_incident_points}
    for seed in args.seeds:
        for name in args.entities:
            entity = run_entity(name, args.epochs, threshold, group_settings, seed)
            if seed == args.seeds[0]:
                results["entities"][name] = entity
            else:
                results["other_seeds"].setdefault(str(seed), {})[name] = entity
            summary = ", ".join(
                f"{rule} point F1 {entity[rule]['point']['f1']:.3f} event F1 {entity[rule]['event']['f1']:.3f}"
                for rule in ("default", "reference", "reference-windows"))
            print(f"seed {seed} {name}: {summary} ({entity['seconds']} s)", flush=True)
    results["seconds"] = round(time.monotonic() - started, 1)
    results["command"] = "python bench/detection.py" + (f" --epochs {args.epochs}" if args.epochs != 20 else "") + (
        f" --entities {' '.join(args.entities)}" if args.entities != list(ENTITIES) else "") + (
        f" --threshold '{args.threshold}'" if threshold else "") + (
        f" --group '{args.group}'" if group_settings else "") + (
        f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds != [42] else "")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    print(tables(results))
    print("\n".join(seed_table(results)))
    if not args.no_docs:
        write_docs(results, results["command"])


if __name__ == "__main__":
    main()
