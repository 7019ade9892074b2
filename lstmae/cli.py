"""Command line of lstmae: ``lstmae COMMAND ...`` or ``python -m lstmae COMMAND ...``.

Every command is two functions: ``_add_<name>(subparsers, common)`` declares
the command and its arguments (``common`` is the parent parser of the shared
options), and ``_run_<name>(args)`` runs it and returns the exit code. To add a command, put its name in :data:`COMMANDS` and write both
functions below, next to the others.

Exit codes: 0 on success, 1 when the library raises a known error (printed
as one line, or with its traceback under ``--debug``), 2 for invalid
arguments, 130 when interrupted, 141 (quietly) when the reader of stdout
closes the pipe early.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import io
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

# The commands in the order ``lstmae --help`` lists them. A new command adds
# its name here plus ``_add_<name>`` and ``_run_<name>`` functions below.
COMMANDS = [
    "simulate",
    "land",
    "ingest",
    "train",
    "test",
    "score",
    "models",
    "incidents",
    "evaluate",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# The reader of stdout went away (``lstmae models show V | head -1``): 128 + SIGPIPE, the status a
# shell reports for a command that SIGPIPE ends, so scripts can tell it from a failed step.
EXIT_BROKEN_PIPE = 141

# Export file names that name a period rather than an entity (``omi-1/train.csv.gz``):
# the entity is then the name of the folder.
PERIOD_NAMES = {"train", "training", "test", "testing", "val", "valid", "validation", "score", "scoring", "data", "metrics"}
# Files beside the exports that are not metrics: labels and anomaly interpretations.
NOT_EXPORTS = re.compile(r"^(labels?|interpretation|incidents)([._-].*)?$", re.IGNORECASE)

log = logging.getLogger(__name__)


class UsageError(Exception):
    """Raised by a ``_run_<name>`` function for an invalid combination of arguments (exit code 2)."""


def _library_errors() -> tuple[type[BaseException], ...]:
    """Exception types printed as one line with exit code 1."""
    from lstmae.config import ConfigError
    from lstmae.registry import RegistryError

    errors: list[type[BaseException]] = [ValueError, OSError, ConfigError, RegistryError]
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        errors += [BotoCoreError, ClientError]
    except ImportError:  # boto3 is optional for file:// lakes
        pass
    return tuple(errors)


# Argument types: each raises ArgumentTypeError naming the value and the expected form.


def _timestamp(text: str) -> pd.Timestamp:
    """Parse an ISO 8601 timestamp; a value without an offset is taken as UTC."""
    try:
        stamp = pd.Timestamp(text)
    except (TypeError, ValueError):
        stamp = None
    if stamp is None or stamp is pd.NaT:
        raise argparse.ArgumentTypeError(
            f"invalid timestamp {text!r}: expected ISO 8601 in UTC, such as 2026-09-01 or 2026-09-01T06:00:00Z"
        )
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a positive integer such as 1 or 10")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected an integer of 0 or more")
    return value


def _step(text: str) -> pd.Timedelta:
    from lstmae.simulate import parse_step

    try:
        return parse_step(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"file {text!r} not found: give the path of an existing file")
    return path


def _existing_path(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text!r} not found: give an existing CSV file or directory")
    return path


# Output helpers.


def _iso(stamp) -> str:
    """Format a timestamp as ISO 8601 UTC with a ``Z`` suffix."""
    stamp = pd.Timestamp(stamp)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    text = stamp.tz_convert("UTC").isoformat()
    return text.replace("+00:00", "Z")


def _out(text: str = "") -> None:
    """Print a result line to stdout (progress and errors go to stderr)."""
    print(text, flush=True)


def _warn(text: str) -> None:
    Progress.clear_line()
    print(f"lstmae: warning: {text}", file=sys.stderr, flush=True)


class Progress:
    """Progress of a long step on stderr.

    On a terminal, progress is one bar redrawn in place. Elsewhere (a log
    file, a pipe, a CI job) each update is one plain line, so logs stay
    readable.
    """

    active: Progress | None = None

    def __init__(self, label: str, total: int, stream=None):
        self.label = label
        self.total = max(1, total)
        self.done = 0
        self.detail = ""
        self.stream = stream or sys.stderr
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()

    def __enter__(self) -> Progress:
        Progress.active = self
        self._draw()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()
        Progress.active = None

    def advance(self, detail: str = "") -> None:
        """Count one finished item and show ``detail`` (what was just done)."""
        self.done = min(self.total, self.done + 1)
        self.detail = detail
        self._draw(plain=True)

    def note(self, detail: str) -> None:
        """Show ``detail`` about the item in progress without counting it as done."""
        self.detail = detail
        self._draw(plain=True)

    def _draw(self, plain: bool = False) -> None:
        if self.interactive:
            width = shutil.get_terminal_size((100, 20)).columns
            filled = int(24 * self.done / self.total)
            elapsed = int(time.monotonic() - self.started)
            line = (f"{self.label} [{'#' * filled}{'.' * (24 - filled)}] {self.done}/{self.total} "
                    f"{elapsed // 60:02d}:{elapsed % 60:02d} {self.detail}")
            self.stream.write("\r" + line[: width - 1].ljust(width - 1))
            self.stream.flush()
        elif plain:
            self.stream.write(f"{self.label} {self.done}/{self.total}: {self.detail}\n")
            self.stream.flush()

    @classmethod
    def clear_line(cls) -> None:
        """Erase the bar so that another line can be written to the terminal."""
        if cls.active is not None and cls.active.interactive:
            cls.active.stream.write("\r\x1b[K")

    @classmethod
    def redraw(cls) -> None:
        if cls.active is not None:
            cls.active._draw()


class _LogHandler(logging.StreamHandler):
    """Write log records to stderr without garbling the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        Progress.clear_line()
        super().emit(record)
        Progress.redraw()


class _EpochProgress(logging.Handler):
    """Show the epoch lines that :mod:`lstmae.model` logs during training on the progress bar."""

    PATTERN = re.compile(r"^epoch (\d+)/(\d+)\s*(.*)$")

    def emit(self, record: logging.LogRecord) -> None:
        match = self.PATTERN.match(record.getMessage())
        if match and Progress.active is not None:
            epoch, total, losses = match.groups()
            Progress.active.note(f"{Progress.active.detail.split(' epoch ')[0]} epoch {epoch}/{total} {losses}")


def _configure_logging(args: argparse.Namespace):
    """Send log records to stderr for the duration of a command; return the function that undoes it.

    Other libraries log warnings only. lstmae logs at the level the options
    choose, but creates INFO records in any case so that the training epochs
    reach the progress bar.
    """
    level = logging.WARNING
    if args.debug:
        level = logging.DEBUG
    elif args.verbose:
        level = logging.INFO
    handler = _LogHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.setLevel(level)
    root, library = logging.getLogger(), logging.getLogger("lstmae")
    saved_levels = root.level, library.level
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    library.setLevel(min(level, logging.INFO))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    def restore() -> None:
        root.removeHandler(handler)
        root.setLevel(saved_levels[0])
        library.setLevel(saved_levels[1])

    return restore


# Shared steps of several commands.


def _open(args: argparse.Namespace):
    """Return ``(config, storage)`` from ``--config`` and ``--lake``."""
    from lstmae.config import load_config
    from lstmae.storage import open_storage

    config = load_config(args.config)
    if args.lake:
        config = dataclasses.replace(config, lake=args.lake)
    return config, open_storage(config.lake)


def _require_local_lake(storage) -> None:
    """Raise FileNotFoundError when a file:// lake's root folder does not exist.

    Commands that only read the lake call this, so that a mistyped or missing
    lake is an error rather than an empty result.
    """
    from lstmae.storage import LocalStorage

    if isinstance(storage, LocalStorage) and not storage.root.is_dir():
        raise FileNotFoundError(
            f"lake {storage.uri} not found: the folder {storage.root} does not exist. Give the lake with "
            "--lake URI, with --config FILE (its 'lake' setting), or with $LSTMAE_LAKE."
        )


def _selected_groups(config, names: list[str] | None) -> list[str]:
    """Return the group names to work on; an unknown name raises ConfigError listing the groups."""
    if not names:
        return [group.name for group in config.groups]
    return [config.group(name).name for name in names]


def _entity_for(path: Path) -> str:
    """Entity of an export file: its name without extensions, or its folder's name for train/test files."""
    stem = path.name
    for suffix in (".gz", ".csv"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    if stem.lower() in PERIOD_NAMES:
        return path.resolve().parent.name
    return stem


def _csv_period(path: Path) -> tuple[pd.Timestamp, pd.Timestamp, pd.Timedelta]:
    """Return ``(first, end, step)`` of a CSV export; ``end`` is one step after the last timestamp."""
    try:
        stamps = pd.read_csv(path, usecols=["timestamp"], dtype=str)["timestamp"]
    except ValueError as error:
        raise ValueError(f"{path}: cannot read a 'timestamp' column ({error}). Exports need a timestamp column.") from None
    if stamps.empty:
        raise ValueError(f"{path}: the file has no rows.")
    parsed = pd.to_datetime(stamps, utc=True, format="ISO8601", errors="coerce")
    if parsed.isna().any():
        bad = stamps[parsed.isna()].iloc[0]
        raise ValueError(f"{path}: invalid timestamp {bad!r}; expected ISO 8601 such as 2026-09-01T00:00:00Z.")
    step = parsed.diff().median() if len(parsed) > 1 else pd.Timedelta(0)
    return parsed.min(), parsed.max() + step, step


def _check_step(path: Path, data_step: pd.Timedelta, config) -> None:
    """Warn when the export's step differs from the configured sampling grid."""
    if data_step <= pd.Timedelta(0) or data_step == config.step_delta:
        return
    if data_step < config.step_delta:
        consequence = f"rows are averaged onto the {config.step} grid"
    else:
        consequence = f"the grid has empty points between rows and windows break at gaps over {config.max_gap_steps} steps"
    _warn(f"{path} has a {data_step} step but the configuration's step is {config.step}: {consequence}. "
          f"Set 'step: {_step_text(data_step)}' in the configuration file to model every row.")


def _step_text(step: pd.Timedelta) -> str:
    seconds = int(step.total_seconds())
    return f"{seconds // 60}min" if seconds % 60 == 0 else f"{seconds}s"


def _land_csv(storage, path: Path, entity: str, name: str | None = None) -> dict:
    """Land one CSV export by UTC day; ``name`` is how the output refers to it (default: its path).

    The object of a day is replaced whole. So on the first and last day of
    the export, the entity's rows landed earlier outside the export's time
    range are merged in first, and landing the afternoon of a day keeps its
    morning.
    """
    from lstmae.landing import land_wide_csv

    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    kept = _rows_outside(storage, entity, frame)
    if kept:
        with tempfile.TemporaryDirectory(prefix="lstmae-") as directory:
            merged = Path(directory) / "merged.csv.gz"
            with gzip.open(merged, "wt", encoding="utf-8", newline="") as stream:
                pd.concat(kept + [frame], ignore_index=True).to_csv(stream, index=False)
            result = land_wide_csv(storage, merged, entity)
        rows = sum(len(part) for part in kept)
        _out(f"Kept {rows:,} rows landed earlier for {entity!r} on the first and last day of {name or path}")
    else:
        result = land_wide_csv(storage, path, entity)
    _out(f"Landed {name or path} as entity {entity!r}: {result['objects']} daily objects, {len(frame):,} rows, "
         f"{_iso(result['start'])} .. {_iso(result['end'])}")
    return result


def _rows_outside(storage, entity: str, frame: pd.DataFrame) -> list[pd.DataFrame]:
    """Return the rows of ``entity``'s landed objects on the export's first and last day that lie outside it."""
    from lstmae.storage import escape_segment

    if "timestamp" not in frame.columns or frame.empty:
        return []  # land_wide_csv raises the error that names the missing column
    stamps = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601", errors="coerce")
    first, last = stamps.min(), stamps.max()
    if first is pd.NaT:
        return []
    kept = []
    for day in sorted({first.floor("D"), last.floor("D")}):
        key = f"landing/date={day.strftime('%Y-%m-%d')}/{escape_segment(entity)}.csv.gz"
        if not storage.exists(key):
            continue
        landed = pd.read_csv(io.BytesIO(gzip.decompress(storage.read_bytes(key))), dtype=str, keep_default_na=False)
        landed_stamps = pd.to_datetime(landed["timestamp"], utc=True, format="ISO8601", errors="coerce")
        # Rows with an unreadable timestamp are kept too, so that ingest quarantines them with their reason.
        outside = landed[landed_stamps.isna() | (landed_stamps < first) | (landed_stamps > last)]
        if outside.empty:
            continue
        if list(landed.columns) != list(frame.columns):
            raise ValueError(
                f"{storage.uri_of(key)} has other columns than the new export for {entity!r} "
                f"({list(landed.columns)[:6]} vs {list(frame.columns)[:6]}), and it has rows outside the new "
                "export's time range that landing would replace. Land the export under another --entity, or "
                "export whole days."
            )
        kept.append(outside)
    return kept


def _whole_days(start: pd.Timestamp, end: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Widen ``[start, end)`` to whole UTC days, the unit in which landing objects are replaced."""
    return start.floor("D"), end.ceil("D")


def _ingest_days(storage, config, start: pd.Timestamp, end: pd.Timestamp) -> dict:
    """Ingest ``[start, end)`` one UTC day at a time, as the daily DAG does; return the summed counts."""
    from lstmae.ingest import ingest_interval
    from lstmae.lake import day_slices

    totals = {"objects": 0, "rows_read": 0, "rows_curated": 0, "rows_deduplicated": 0,
              "rows_quarantined": 0, "objects_quarantined": 0}
    reasons: dict[str, int] = {}
    slices = day_slices(start, end)
    with Progress("ingest", len(slices)) as progress:
        for day, slice_start, slice_end in slices:
            report = ingest_interval(storage, config, slice_start, slice_end)
            for key in totals:
                totals[key] += getattr(report, key)
            for reason, count in report.quarantined_by_reason.items():
                reasons[reason] = reasons.get(reason, 0) + count
            progress.advance(f"{day.date()} {report.rows_curated:,} rows curated")
    _out(f"Ingested {_iso(start)} .. {_iso(end)}: objects {totals['objects']}, rows read {totals['rows_read']:,}, "
         f"curated {totals['rows_curated']:,}, deduplicated {totals['rows_deduplicated']:,}, "
         f"quarantined {totals['rows_quarantined']:,} rows and {totals['objects_quarantined']} objects")
    for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
        _out(f"  quarantined: {count:,} x {reason}")
    _out(f"Curated metrics: {storage.uri_of('metrics')}/")
    return dict(totals, quarantined_by_reason=reasons)


def _score_days(storage, config, groups: list[str], start, end, version: str | None, plots: bool = True) -> list[dict]:
    """Score ``[start, end)`` day by day for each group, then combine the groups of that day.

    Scoring day by day gives the same scores as one run over the range (the
    library reads each day's context rows), and matches the daily DAG runs.
    """
    from lstmae.lake import day_slices
    from lstmae.pipeline import combine_interval, score_group

    slices = day_slices(start, end)
    days = []
    with Progress("score", len(slices) * len(groups)) as progress:
        for day, slice_start, slice_end in slices:
            summaries = []
            for group in groups:
                progress.note(f"{day.date()} group {group}")
                summaries.append(score_group(storage, config, group, slice_start, slice_end, version=version))
                progress.advance(f"{day.date()} group {group}: {summaries[-1]['scored']:,} points scored")
            combined = combine_interval(storage, config, slice_start, slice_end, plots=plots)
            days.append({"day": day, "groups": summaries, "combined": combined})
    return days


def _print_score_days(days: list[dict]) -> None:
    """Print one line per day and group; the last two columns count all groups of the day together."""
    _out(f"{'day':<10}  {'group':<12} {'model version':<24} {'points':>7} {'scored':>7} {'anomalous points':>16} "
         f"{'windows':>7} {'anomalous windows':>17} {'incidents':>9}")
    for item in days:
        for summary in item["groups"]:
            _out(f"{item['day'].date()!s:<10}  {summary['group']:<12} {summary['model_version']:<24} "
                 f"{summary['rows']:>7,} {summary['scored']:>7,} {summary['anomalies']:>16,} {summary['windows']:>7,} "
                 f"{item['combined']['anomalies']:>17,} {item['combined']['incidents']:>9,}")


def _print_anomalies(storage, start, end, limit: int) -> int:
    """Print the anomalous windows whose last point is in ``[start, end)``; return their count."""
    from lstmae.lake import read_days
    from lstmae.pipeline import ANOMALIES

    table = read_days(storage, ANOMALIES, start, end)
    frame = table.to_pandas() if table is not None else pd.DataFrame()
    if not frame.empty:
        frame = frame[(frame["window_end"] >= start) & (frame["window_end"] < end)]
        frame = frame.sort_values(["window_start", "entity", "group"], kind="stable")
    if frame.empty:
        _out("No anomalous windows.")
        return 0
    _out(f"{len(frame):,} anomalous windows (non-overlapping windows of timesteps points, one row per group):")
    _out(f"  {'window start':<20} {'window end':<20} {'entity':<16} {'group':<10} {'max ratio':>9} "
         f"{'vote':>5}  {'first offending':<20} features over threshold")
    for row in frame.head(limit).itertuples():
        features = list(row.features_over_threshold) if row.features_over_threshold is not None else []
        shown = ", ".join(features[:5]) + (f" (+{len(features) - 5} more)" if len(features) > 5 else "")
        first = _iso(row.first_offending_timestamp) if pd.notna(row.first_offending_timestamp) else "-"
        _out(f"  {_iso(row.window_start):<20} {_iso(row.window_end):<20} {row.entity:<16} {row.group:<10} "
             f"{row.max_ratio:>9.3g} {row.vote_score:>5.2g}  {first:<20} {shown}")
    if len(frame) > limit:
        _out(f"  ... {len(frame) - limit:,} more (raise --limit, or query the anomalies table)")
    return len(frame)


def _print_outputs(storage) -> None:
    _out("Outputs (Parquet, partitioned by date):")
    for table in ("scores", "windows", "anomalies", "incidents", "votes"):
        _out(f"  {table:<10} {storage.uri_of(table)}/")


def _print_thresholds(storage, group: str, version: str) -> None:
    from lstmae import registry

    entry = registry.get_version(storage, group, version)
    thresholds = entry.thresholds
    _out(f"  thresholds ({thresholds.method}, score threshold {thresholds.score_threshold:.6g}); "
         "per-feature error thresholds in the feature's unit:")
    width = max(len(name) for name in thresholds.features)
    for name, value in zip(thresholds.features, thresholds.feature_thresholds):
        _out(f"    {name:<{width}}  {value:.6g}")


# Common options of every command.


def _common_options(default=None) -> argparse.ArgumentParser:
    """Return the parent parser of the shared options; ``default=argparse.SUPPRESS`` leaves unset ones out."""
    common = argparse.ArgumentParser(add_help=False, argument_default=default)
    options = common.add_argument_group("common options")
    options.add_argument("--config", type=_existing_file, metavar="FILE",
                         help="YAML configuration file (default: $LSTMAE_CONFIG, else the built-in defaults: "
                              "one group of all metrics, 5min step)")
    options.add_argument("--lake", metavar="URI",
                         help="lake root, file:///path, a local path or s3://bucket/prefix (default: the "
                              "configuration's lake, else $LSTMAE_LAKE, else ./lake)")
    options.add_argument("-v", "--verbose", action="store_true", help="log what the library does (INFO level)")
    options.add_argument("--debug", action="store_true",
                         help="log at DEBUG level and show the full traceback of an error")
    return common


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=32)


def _command_parser(subparsers, name: str, common, help: str, description: str, epilog: str = ""):
    parser = subparsers.add_parser(name, parents=[common], help=help, description=description,
                                   epilog=epilog, formatter_class=_HelpFormatter)
    parser.set_defaults(command=name, run=globals()[f"_run_{name}"], command_parser=parser)
    return parser


# simulate


def _add_simulate(subparsers, common) -> None:
    parser = _command_parser(
        subparsers, "simulate", common,
        help="write the metric exports of a simulated fleet with labelled incidents",
        description=(
            "Simulate N hosts with M metrics on a fixed step (daily and weekly cycles, noise, hosts\n"
            "correlated through a shared load) with injected incidents: spike, level_shift, slow_leak,\n"
            "stuck_value and peer_divergence. Writes one gzip CSV per host per day under\n"
            "landing/date=YYYY-MM-DD/<host>.csv.gz, labels.csv.gz (timestamp, entity, label) and\n"
            "incidents.json (kind, entity, metrics, start, end). The same arguments and seed give the same files."
        ),
        epilog="example:\n  lstmae simulate --hosts 20 --metrics 4 --days 7 --step 5min --seed 1 --clean-days 5",
    )
    parser.add_argument("--hosts", type=_positive_int, metavar="N", default=10, help="number of hosts (default: %(default)s)")
    parser.add_argument("--metrics", type=_positive_int, metavar="M", default=4,
                        help="metrics per host: cpu_percent, memory_used_percent, disk_io_percent, network_rx_mbps, "
                             "... (default: %(default)s)")
    parser.add_argument("--days", type=_positive_int, metavar="D", default=1, help="whole UTC days to simulate (default: %(default)s)")
    parser.add_argument("--step", type=_step, metavar="STEP", default="1min",
                        help="sampling step, a duration that divides one day such as 30s, 1min, 5min "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=_non_negative_int, metavar="S", default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--start", type=_timestamp, default="2026-09-01", metavar="DATE",
                        help="first day, a UTC midnight in ISO 8601 (default: %(default)s)")
    parser.add_argument("--incidents", type=_non_negative_int, metavar="K", default=None,
                        help="number of incidents, kinds in turn (default: 5%% of the host-days after the clean "
                             "days, at least 5; 0 for none)")
    parser.add_argument("--clean-days", type=_non_negative_int, metavar="D", default=0,
                        help="leading days without incidents, for training (default: %(default)s)")
    parser.add_argument("--format", choices=("wide", "long"), default="wide",
                        help="export layout: wide (timestamp + one column per metric) or long (timestamp, entity, "
                             "metric, value) (default: %(default)s)")
    parser.add_argument("--out", metavar="DIR_OR_LAKE_URI",
                        help="where to write: a directory or lake URI (default: the lake)")


def _run_simulate(args) -> int:
    from lstmae.simulate import simulate_fleet, write_fleet
    from lstmae.storage import open_storage

    if args.start != args.start.floor("D"):
        raise UsageError(f"--start {_iso(args.start)} is not a UTC midnight: give a date such as 2026-09-01")
    config, lake = _open(args)
    storage = open_storage(args.out) if args.out else lake
    fleet = simulate_fleet(hosts=args.hosts, metrics=args.metrics, days=args.days, step=args.step, seed=args.seed,
                           start=args.start, incidents=args.incidents, clean_days=args.clean_days)
    with Progress("simulate", args.days) as progress:
        summary = write_fleet(storage, fleet, format=args.format,
                              progress=lambda done, total, day: progress.advance(f"{day.date()} written"))
    _out(f"Simulated {summary['hosts']:,} hosts x {len(summary['metrics'])} metrics at {_step_text(fleet.step)}, "
         f"{summary['start']} .. {summary['end']}: {summary['values']:,} values in {summary['seconds']:.1f} s")
    _out(f"Metrics: {', '.join(summary['metrics'])}")
    _out(f"Exports ({args.format} CSV): {summary['objects']:,} objects under {storage.uri_of('landing')}/")
    kinds = ", ".join(f"{kind} {count}" for kind, count in summary["incidents_by_kind"].items())
    _out(f"Incidents: {summary['incidents']} ({kinds})")
    _out(f"Labels: {storage.uri_of(summary['labels_key'])}; incidents: {storage.uri_of(summary['incidents_key'])}")
    lake_option = f" --lake {storage.uri}" if storage.uri != lake.uri else ""
    _out(f"Next: lstmae ingest{lake_option} --start {summary['start']} --end {summary['end']}")
    return EXIT_OK


# land


def _add_land(subparsers, common) -> None:
    parser = _command_parser(
        subparsers, "land", common,
        help="copy CSV exports into the lake's landing/ area, one object per entity and UTC day",
        description=(
            "Put metric exports where ingest reads them: landing/date=YYYY-MM-DD/<entity>.csv.gz.\n\n"
            "A CSV file (wide: timestamp + one column per metric; or long: timestamp, entity, metric,\n"
            "value; optionally gzip) is split by UTC day. A directory is read in one of two ways:\n"
            "  - it has a landing/ folder (the output of lstmae simulate --out DIR): its objects are\n"
            "    copied as they are;\n"
            "  - otherwise every *.csv and *.csv.gz file in it is landed as above. Files named\n"
            "    labels*, interpretation* or incidents* are skipped because they contain no metrics.\n\n"
            "The entity of a wide CSV is --entity, else the file name without extensions, else, for\n"
            "files named train, test, val or validation, the folder name (omi-1/train.csv.gz -> omi-1)."
        ),
        epilog="examples:\n  lstmae land ../shared/data/asd/omi-1\n  lstmae land export.csv.gz --entity web-01",
    )
    parser.add_argument("path", type=_existing_path, metavar="DIR_OR_CSV", help="a CSV export or a directory of exports")
    parser.add_argument("--entity", metavar="NAME", help="entity name for wide CSV files (default: from the file name)")


def _run_land(args) -> int:
    config, storage = _open(args)
    path: Path = args.path
    starts, ends = [], []
    if path.is_file():
        result = _land_csv(storage, path, args.entity or _entity_for(path))
        starts.append(pd.Timestamp(result["start"]))
        ends.append(pd.Timestamp(result["end"]))
    elif (path / "landing").is_dir():
        files = sorted(p for p in (path / "landing").rglob("*") if p.is_file() and not p.name.startswith("."))
        with Progress("land", len(files)) as progress:
            for file in files:
                key = "landing/" + file.relative_to(path / "landing").as_posix()
                storage.write_bytes(key, file.read_bytes())
                progress.advance(key)
        days = sorted({part for file in files for part in file.relative_to(path).parts if part.startswith("date=")})
        _out(f"Copied {len(files)} objects from {path / 'landing'} to {storage.uri_of('landing')}/")
        if days:
            starts.append(pd.Timestamp(days[0][5:], tz="UTC"))
            ends.append(pd.Timestamp(days[-1][5:], tz="UTC") + pd.Timedelta(days=1))
    else:
        files = sorted(p for p in path.iterdir() if p.is_file() and (p.name.endswith(".csv") or p.name.endswith(".csv.gz")))
        exports = [p for p in files if not NOT_EXPORTS.match(p.name)]
        for skipped in sorted(set(files) - set(exports)):
            _out(f"Skipped {skipped}: labels or annotations, not metrics")
        if not exports:
            raise ValueError(f"No CSV exports (*.csv, *.csv.gz) in {path}. Give a CSV file or a directory that contains exports.")
        for file in exports:
            result = _land_csv(storage, file, args.entity or _entity_for(file))
            starts.append(pd.Timestamp(result["start"]))
            ends.append(pd.Timestamp(result["end"]))
    if starts:
        first, last = _whole_days(min(starts), max(ends))
        _out(f"Next: lstmae ingest --start {_iso(first)} --end {_iso(last)}")
    return EXIT_OK


# ingest


def _add_ingest(subparsers, common) -> None:
    parser = _command_parser(
        subparsers, "ingest", common,
        help="parse the landed exports of a time range into curated Parquet partitions",
        description=(
            "Read landing/date=D/ for every UTC day D of [START, END), validate and normalise the rows,\n"
            "and replace metrics/date=D/ (curated Parquet). Rows that cannot be used are written to\n"
            "quarantine/ with their reason. Runs one day at a time, as the daily lstmae_ingest DAG does."
        ),
        epilog="example:\n  lstmae ingest --start 2026-09-01 --end 2026-10-16",
    )
    _add_range(parser)


def _add_range(parser) -> None:
    parser.add_argument("--start", type=_timestamp, required=True, metavar="TIMESTAMP",
                        help="start of the range, inclusive, ISO 8601 in UTC (2026-09-01 or 2026-09-01T06:00:00Z)")
    parser.add_argument("--end", type=_timestamp, required=True, metavar="TIMESTAMP", help="end of the range, exclusive, ISO 8601 in UTC")


def _add_no_plots(parser, what: str) -> None:
    parser.add_argument("--no-plots", action="store_true", help=f"skip rendering {what}, which saves time")


def _check_range(args) -> None:
    if args.end <= args.start:
        raise UsageError(f"--end {_iso(args.end)} is not after --start {_iso(args.start)}: give an end after the start")


def _run_ingest(args) -> int:
    _check_range(args)
    config, storage = _open(args)
    _ingest_days(storage, config, args.start, args.end)
    return EXIT_OK


# train


def _add_train(subparsers, common) -> None:
    parser = _command_parser(
        subparsers, "train", common,
        help="train the model on a training CSV and set thresholds on a validation CSV",
        description=(
            "The reference prototype's form. Lands TRAIN_CSV and VAL_CSV (wide CSV exports of the same\n"
            "entity: timestamp + one column per metric) into the lake, ingests them, then trains every\n"
            "configured group on the whole range: the scaler and the model see TRAIN_CSV's period, the\n"
            "thresholds and the promotion checks use VAL_CSV's period. VAL_CSV must start at or after\n"
            "the end of TRAIN_CSV. Without VAL_CSV, the last validation_fraction of TRAIN_CSV's period\n"
            "(default 0.3, by time) is the validation period. Prints the model versions and thresholds."
        ),
        epilog=("examples:\n"
                "  lstmae train train.csv.gz validation.csv.gz --config lstmae.yaml\n"
                "  lstmae train ../shared/data/asd/omi-1/train.csv.gz\n\n"
                "Model settings (timesteps, units, epochs, batch size, threshold method) come from the\n"
                "configuration file; the defaults are the reference model: 60 timesteps, 100 units, 20 epochs."),
    )
    parser.add_argument("train_csv", type=_existing_file, metavar="TRAIN_CSV", help="wide CSV of the training period")
    parser.add_argument("val_csv", type=_existing_file, metavar="VAL_CSV", nargs="?",
                        help="wide CSV of the validation period (default: the end of TRAIN_CSV's period)")
    parser.add_argument("--entity", metavar="NAME",
                        help="entity of both files (default: TRAIN_CSV's name without extensions, or its folder's "
                             "name for train.csv)")
    parser.add_argument("--group", action="append", metavar="NAME",
                        help="train only this group; repeat for several (default: every configured group)")
    parser.add_argument("--no-promote", action="store_true",
                        help="register the new versions without making them current")
    _add_no_plots(parser, "the loss curve (models/<group>/<version>/loss.png)")


def _combine_csvs(train: Path, validation: Path, directory: str) -> Path:
    """Write TRAIN and VAL as one CSV, so that a UTC day shared by both lands as one object."""
    frames = [pd.read_csv(path, dtype=str, keep_default_na=False) for path in (train, validation)]
    if list(frames[0].columns) != list(frames[1].columns):
        raise ValueError(
            f"{validation} has other columns than {train}: {list(frames[1].columns)[:6]} vs "
            f"{list(frames[0].columns)[:6]}. Both files need the same timestamp and metric columns."
        )
    combined = Path(directory) / "combined.csv.gz"
    with gzip.open(combined, "wt", encoding="utf-8", newline="") as stream:
        pd.concat(frames, ignore_index=True).to_csv(stream, index=False)
    return combined


def _land_training_data(storage, config, args) -> tuple[pd.Timestamp, pd.Timestamp, pd.Timestamp | None]:
    """Land and ingest TRAIN_CSV (and VAL_CSV); return ``(start, end, validation start or None)``."""
    train_start, train_end, train_step = _csv_period(args.train_csv)
    _check_step(args.train_csv, train_step, config)
    entity = args.entity or _entity_for(args.train_csv)
    if args.val_csv is None:
        _land_csv(storage, args.train_csv, entity)
        _out(f"  validation period: the last {config.validation_fraction:g} of {_iso(train_start)} .. {_iso(train_end)}")
        _ingest_days(storage, config, *_whole_days(train_start, train_end))
        return train_start, train_end, None

    validation_start, validation_end, _ = _csv_period(args.val_csv)
    if validation_start < train_end:
        raise ValueError(
            f"VAL_CSV {args.val_csv} starts at {_iso(validation_start)}, before TRAIN_CSV {args.train_csv} ends "
            f"at {_iso(train_end)}. Give a validation period that follows the training period."
        )
    with tempfile.TemporaryDirectory(prefix="lstmae-") as directory:
        combined = _combine_csvs(args.train_csv, args.val_csv, directory)
        _land_csv(storage, combined, entity, name=f"{args.train_csv} and {args.val_csv}")
    _out(f"  training period {_iso(train_start)} .. {_iso(train_end)}, "
         f"validation period {_iso(validation_start)} .. {_iso(validation_end)}")
    _ingest_days(storage, config, *_whole_days(train_start, validation_end))
    return train_start, validation_end, validation_start


def _run_train(args) -> int:
    from lstmae.training import train_group

    config, storage = _open(args)
    groups = _selected_groups(config, args.group)
    start, end, validation_start = _land_training_data(storage, config, args)

    results = []
    epoch_handler = _EpochProgress(logging.INFO)
    model_log = logging.getLogger("lstmae.model")
    model_log.addHandler(epoch_handler)
    try:
        with Progress("train", len(groups)) as progress:
            for group in groups:
                progress.note(f"group {group}")
                result = train_group(storage, config, group, start, end, promote=not args.no_promote,
                                     plots=not args.no_plots, validation_start=validation_start)
                results.append(result)
                progress.advance(f"group {group}: version {result['version']} {result['status']}")
    finally:
        model_log.removeHandler(epoch_handler)
    for result in results:
        _out(f"Model {result['group']}/{result['version']}: {result['status']} ({result['reason']})")
        val_loss = result.get("val_loss")
        _out(f"  {result['training_windows']:,} training windows; final loss {result['loss']:.6g}"
             + (f", validation loss {val_loss:.6g}" if val_loss is not None else "")
             + f"; validation MSE {result['validation_mse']:.6g} (standardised units)")
        _print_thresholds(storage, result["group"], result["version"])
    _out(f"Models: {storage.uri_of('models')}/")
    return EXIT_OK


# test


def _add_test(subparsers, common) -> None:
    parser = _command_parser(
        subparsers, "test", common,
        help="score a CSV with the current model and print its anomalous windows",
        description=(
            "The reference prototype's form. Lands and ingests CSV (a wide export, as for train), scores\n"
            "its whole range with each group's current model (or --version) and combines the groups.\n"
            "Rows already in the lake just before the CSV's first timestamp serve as context, so the\n"
            "first points are scored too; without them the first timesteps - 1 points are reported as\n"
            "unscorable. Prints the anomalous windows with the features over threshold and the first\n"
            "offending timestamp."
        ),
        epilog="example:\n  lstmae test test.csv.gz --limit 50",
    )
    parser.add_argument("csv", type=_existing_file, metavar="CSV", help="wide CSV export to score")
    parser.add_argument("--entity", metavar="NAME",
                        help="entity of the file (default: its name without extensions, or its folder's name for "
                             "test.csv); use the entity it was trained as")
    parser.add_argument("--group", action="append", metavar="NAME",
                        help="score only this group; repeat for several (default: every configured group)")
    parser.add_argument("--version", metavar="V", help="pin a model version of the group instead of the current one")
    parser.add_argument("--limit", type=_positive_int, metavar="N", default=20,
                        help="anomalous windows to print (default: %(default)s)")
    _add_no_plots(parser, "incident plots (plots/date=D/<incident>.png)")


def _check_version(groups: list[str], version: str | None) -> None:
    if version and len(groups) != 1:
        raise UsageError(
            f"--version {version} pins the model of one group, but {len(groups)} groups are selected "
            f"({', '.join(groups)}): add --group NAME"
        )


def _run_test(args) -> int:
    config, storage = _open(args)
    groups = _selected_groups(config, args.group)
    _check_version(groups, args.version)
    start, end, step = _csv_period(args.csv)
    _check_step(args.csv, step, config)
    _land_csv(storage, args.csv, args.entity or _entity_for(args.csv))
    _ingest_days(storage, config, *_whole_days(start, end))
    days = _score_days(storage, config, groups, start, end, args.version, plots=not args.no_plots)
    rows = sum(s["rows"] for d in days for s in d["groups"])
    scored = sum(s["scored"] for d in days for s in d["groups"])
    flagged = sum(s["anomalies"] for d in days for s in d["groups"])
    windows = sum(s["windows"] for d in days for s in d["groups"])
    _out(f"Scored {_iso(start)} .. {_iso(end)}: {rows:,} points, {scored:,} scored, {rows - scored:,} unscorable, "
         f"{flagged:,} anomalous points, {windows:,} windows judged")
    _print_anomalies(storage, start, end, args.limit)
    _print_outputs(storage)
    return EXIT_OK


# score


def _add_score(subparsers, common) -> None:
    parser = _command_parser(
        subparsers, "score", common,
        help="score a time range of curated metrics and combine the groups",
        description=(
            "Score every grid point of [START, END) with each group's current model (or --version),\n"
            "one UTC day at a time as the daily lstmae_score DAG does, then combine the groups into\n"
            "votes, anomalies and incidents. Rerunning a range replaces its output."
        ),
        epilog="example:\n  lstmae score --start 2026-10-01 --end 2026-10-16 --group cpu",
    )
    _add_range(parser)
    parser.add_argument("--group", action="append", metavar="NAME",
                        help="score only this group; repeat for several (default: every configured group)")
    parser.add_argument("--version", metavar="V", help="pin a model version of the group instead of the current one")
    parser.add_argument("--limit", type=_non_negative_int, metavar="N", default=20,
                        help="anomalous windows to print (default: %(default)s; 0 prints none)")
    _add_no_plots(parser, "incident plots (plots/date=D/<incident>.png)")


def _run_score(args) -> int:
    _check_range(args)
    config, storage = _open(args)
    groups = _selected_groups(config, args.group)
    _check_version(groups, args.version)
    days = _score_days(storage, config, groups, args.start, args.end, args.version, plots=not args.no_plots)
    _print_score_days(days)
    if args.limit:
        _print_anomalies(storage, args.start, args.end, args.limit)
    _print_outputs(storage)
    return EXIT_OK


# models


def _add_models(subparsers, common) -> None:
    parser = _command_parser(
        subparsers, "models", common,
        help="list, show, promote or roll back model versions",
        description=(
            "Work with the model registry (models/<group>/<version>/ in the lake).\n"
            "  list               every version with its status, data range and validation error; * marks\n"
            "                     the current version, which scoring uses unless a run pins another\n"
            "  show VERSION       the version's metadata as JSON (gates, losses, thresholds, config, ...)\n"
            "  promote VERSION    make VERSION current, whatever its gates said\n"
            "  rollback           make the previously current version current again (every group with an\n"
            "                     earlier version, or only --group)\n"
            "The common options may come before or after the action and VERSION."
        ),
        epilog="examples:\n  lstmae models list\n  lstmae models promote 20261204T020000Z-3f2a9c\n  lstmae models rollback --group cpu",
    )
    # The actions are subcommands, each with its own VERSION positional, because argparse in Python
    # 3.11 matches an optional (nargs="?") positional to nothing when an option precedes it, so
    # "show --lake X VERSION" failed with "unrecognized arguments: VERSION".
    # Their common options default to SUPPRESS so that they do not overwrite the values given
    # before the action ("models --lake X show VERSION").
    suppressed = _common_options(argparse.SUPPRESS)
    actions = parser.add_subparsers(title="actions", metavar="ACTION", dest="action")
    actions.required = True
    for action, help_text in (("list", "every version with its status, data range and validation error"),
                              ("show", "the version's metadata as JSON"),
                              ("promote", "make VERSION current, whatever its gates said"),
                              ("rollback", "make the previously current version current again")):
        sub = actions.add_parser(action, parents=[suppressed], help=help_text, description=help_text,
                                 formatter_class=_HelpFormatter)
        sub.set_defaults(command_parser=sub)
        if action in ("show", "promote"):
            sub.add_argument("version", metavar="VERSION", help="model version, as 'lstmae models list' prints it")
            sub.add_argument("--group", metavar="NAME", help="the group that holds VERSION (default: every group is searched)")
        else:
            sub.add_argument("--group", metavar="NAME", help="only this group (default: every group)")
        if action == "list":
            sub.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _run_models(args) -> int:
    import json

    from lstmae import registry
    from lstmae.tasks import registry_action

    config, storage = _open(args)
    _require_local_lake(storage)
    version = getattr(args, "version", None)
    if args.action == "show":
        entry = registry.find_version(storage, version, args.group)
        metadata = dict(entry.metadata, current=registry.current_version(storage, entry.group) == entry.version)
        _out(json.dumps(metadata, indent=2, sort_keys=True))
        return EXIT_OK
    result = registry_action(storage, config, args.action, version=version, group=args.group)
    if args.action == "list":
        if args.json:
            _out(json.dumps(result["groups"], indent=2))
            return EXIT_OK
        if not any(result["groups"].values()):
            _out(f"No model versions in {storage.uri_of('models')}/. Train first: lstmae train, or the lstmae_train DAG.")
            return EXIT_OK
        _out(f"  {'group':<12} {'version':<24} {'status':<10} {'created (UTC)':<16} {'data range (UTC)':<33} "
             f"{'windows':>7} {'val MSE':>9}  reason")
        for group, versions in result["groups"].items():
            for item in versions:
                mark = "*" if item["current"] else " "
                created = _iso(item["created_at"])[:16].replace("T", " ") if item["created_at"] else "-"
                data_range = (f"{_iso(item['data_start'])[:16].replace('T', ' ')} .. {_iso(item['data_end'])[:10]}"
                              if item["data_start"] else "-")
                mse = f"{item['validation_mse']:.4g}" if item["validation_mse"] is not None else "-"
                _out(f"{mark} {group:<12} {item['version']:<24} {item['status'] or '-':<10} {created:<16} {data_range:<33} "
                     f"{item['training_windows'] or 0:>7,} {mse:>9}  {item['reason'] or ''}")
        _out("* current version (used by scoring unless a run pins another)")
        return EXIT_OK
    for group, pointer in result["groups"].items():
        _out(f"Group {group}: current version {pointer['version']} ({pointer['reason']})")
    return EXIT_OK


# incidents


def _add_incidents(subparsers, common) -> None:
    parser = _command_parser(
        subparsers, "incidents", common,
        help="print recent incidents as a table, or as JSON with --json",
        description=(
            "Print the incidents (runs of anomalous points of one entity and group) that overlap the\n"
            "period, newest first. Without --since, the period is the 7 UTC days that end with the\n"
            "newest day that has incidents in the lake, that day included."
        ),
        epilog="examples:\n  lstmae incidents --since 2026-10-01 --group cpu\n  lstmae incidents --entity web-01 --json",
    )
    parser.add_argument("--since", type=_timestamp, metavar="TIMESTAMP",
                        help="start of the period, ISO 8601 in UTC (default: 6 days before the newest incident day, "
                             "so that the period has 7 days)")
    parser.add_argument("--until", type=_timestamp, metavar="TIMESTAMP",
                        help="end of the period, exclusive (default: the end of the newest incident day)")
    parser.add_argument("--group", metavar="NAME", help="only incidents of this group")
    parser.add_argument("--entity", metavar="NAME", help="only incidents of this entity")
    parser.add_argument("--limit", type=_non_negative_int, metavar="N", default=50,
                        help="rows to print in the table (default: %(default)s; 0 prints all; --json prints all)")
    parser.add_argument("--json", action="store_true", help="print a JSON array of incidents, for scripts")


def _run_incidents(args) -> int:
    import json

    from lstmae.query import read_incidents

    config, storage = _open(args)
    _require_local_lake(storage)
    if args.since is not None and args.until is not None and args.until <= args.since:
        raise UsageError(f"--until {_iso(args.until)} is not after --since {_iso(args.since)}: give an end after the start")
    frame = read_incidents(storage, since=args.since, until=args.until, group=args.group, entity=args.entity)
    if args.json:
        records = []
        for row in frame.to_dict("records"):
            record = {key: (_iso(value) if isinstance(value, pd.Timestamp) else value) for key, value in row.items()}
            record["top_features"] = [str(name) for name in (row["top_features"] if row["top_features"] is not None else [])]
            record["peak_score"] = None if pd.isna(row["peak_score"]) else float(row["peak_score"])
            record["points"] = int(row["points"])
            record["open"] = bool(row["open"])
            records.append(record)
        _out(json.dumps(records, indent=2))
        return EXIT_OK
    if frame.empty:
        _out(f"No incidents in {storage.uri_of('incidents')}/ for this period and filter.")
        return EXIT_OK
    shown = frame if args.limit == 0 else frame.head(args.limit)
    _out(f"{len(frame):,} incidents, newest first:")
    _out(f"  {'start (UTC)':<20} {'end':<20} {'entity':<16} {'group':<10} {'peak score':>10} {'peak at':<20} "
         f"{'points':>6} {'open':<4}  {'incident id':<16}  top features")
    for row in shown.itertuples():
        features = list(row.top_features) if row.top_features is not None else []
        peak = f"{row.peak_score:.4g}" if pd.notna(row.peak_score) else "-"
        _out(f"  {_iso(row.start):<20} {_iso(row.end):<20} {row.entity:<16} {row.group:<10} {peak:>10} "
             f"{_iso(row.peak_timestamp):<20} {row.points:>6} {'yes' if row.open else 'no':<4}  {row.incident_id:<16}  "
             f"{', '.join(features)}")
    if len(shown) < len(frame):
        _out(f"  ... {len(frame) - len(shown):,} more (raise --limit, or use --json)")
    return EXIT_OK


# evaluate


def _add_evaluate(subparsers, common) -> None:
    parser = _command_parser(
        subparsers, "evaluate", common,
        help="measure scores against labelled anomalies (precision, recall, F1, AUC-PR, HitRate)",
        description=(
            "Compare the scores of a range with a labels file (timestamp,label[,entity]; 1 marks an\n"
            "anomaly) and print, per entity and averaged: point-wise precision, recall and F1 at the\n"
            "product's own threshold, the best F1 over all thresholds, point-adjusted F1, event-wise\n"
            "precision, recall and F1 of the incidents, the detection delay, false alarms per normal day,\n"
            "the area under the precision-recall curve, VUS-PR and, with --interpretation, the attribution\n"
            "HitRate@100% and @150%. Scores come from the lake over --start/--end, or from --scores."
        ),
        epilog=("examples:\n  lstmae evaluate --labels labels.csv.gz --start 2026-10-01 --end 2026-10-16\n"
                "  lstmae evaluate --scores scores.parquet --labels labels.csv --interpretation interpretation.csv "
                "--json report.json"),
    )
    parser.add_argument("--labels", type=_existing_file, required=True, metavar="FILE",
                        help="CSV of timestamp,label (and optionally entity), gzip allowed")
    parser.add_argument("--interpretation", type=_existing_file, metavar="FILE",
                        help="CSV of start,end,metrics (metrics separated by ';') naming the cause of each anomaly")
    parser.add_argument("--scores", type=_existing_path, metavar="PATH",
                        help="a scores Parquet file or folder instead of the lake")
    parser.add_argument("--start", type=_timestamp, metavar="TIMESTAMP",
                        help="start of the scored range, ISO 8601 in UTC (default: the first label)")
    parser.add_argument("--end", type=_timestamp, metavar="TIMESTAMP",
                        help="end of the scored range, exclusive (default: one step after the last label)")
    parser.add_argument("--group", metavar="NAME", help="the group whose scores to evaluate (needed when several are scored)")
    parser.add_argument("--entity", metavar="NAME", help="the entity of labels that have no entity column")
    parser.add_argument("--json", metavar="FILE", help="write the full report as JSON to FILE")
    parser.add_argument("--markdown", metavar="FILE", help="write the summary table as Markdown to FILE")


def _run_evaluate(args) -> int:
    from lstmae import evaluate

    config, storage = _open(args)
    labels = evaluate.read_labels(args.labels)
    interpretation = evaluate.read_interpretation(args.interpretation) if args.interpretation else None
    step = labels["timestamp"].sort_values().diff().mode()
    start = args.start or labels["timestamp"].min()
    end = args.end or labels["timestamp"].max() + (step.iloc[0] if len(step) else config.step_delta)
    if end <= start:
        raise UsageError(f"--end {_iso(end)} is not after --start {_iso(start)}: give an end after the start")
    source = str(args.scores) if args.scores else storage.uri
    scores = evaluate.read_scores(source, start, end, group=args.group)
    incidents = None if args.scores else evaluate.read_incidents_table(storage, start, end)
    report = evaluate.evaluate_scores(scores, labels, interpretation, merge_steps=config.incident_merge_steps,
                                      entity=args.entity, incidents=incidents)
    _out(evaluate.write_report(report, args.json, args.markdown))
    return EXIT_OK


# Parser and entry point.


def build_parser() -> argparse.ArgumentParser:
    """Build the parser of every command in :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="lstmae",
        description="Anomaly detection for server resource metrics with an LSTM autoencoder, over a lake of "
                    "metric exports. All timestamps are ISO 8601 in UTC.",
        epilog="Run 'lstmae COMMAND --help' for the options of a command.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("-V", "--version", action="version", version=f"lstmae {_package_version()}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    subparsers.required = True
    common = _common_options()
    for name in COMMANDS:
        add = globals().get(f"_add_{name}")
        if add is None or f"_run_{name}" not in globals():
            raise RuntimeError(f"Command {name!r} is listed in COMMANDS but _add_{name} or _run_{name} is missing.")
        add(subparsers, common)
    return parser


def _package_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("lstmae")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the flush at interpreter exit does not raise BrokenPipeError again.

    This is the handling that Python's documentation of SIGPIPE recommends.
    """
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # a captured or replaced stdout has no descriptor
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, descriptor)
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        # Report them with the usage of the command that was given, not the top-level usage.
        args.command_parser.error(f"unrecognized arguments: {' '.join(extras)}")
    restore_logging = _configure_logging(args)
    try:
        return args.run(args)
    except UsageError as error:
        Progress.clear_line()
        args.command_parser.print_usage(sys.stderr)
        print(f"lstmae {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        Progress.clear_line()
        print(f"lstmae {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except _library_errors() as error:
        if args.debug:
            raise
        Progress.clear_line()
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"lstmae {args.command}: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        restore_logging()


if __name__ == "__main__":
    sys.exit(main())
