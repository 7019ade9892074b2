"""Configuration: the lake, the sampling grid, and the metric groups to model.

A configuration is a YAML file (see ``docs/configuration.md``) or built in code.
Every field has a default, so an empty file is valid: it models all metrics of
every entity as one group with the reference settings.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

LAYOUTS = ("metrics", "nodes")
MODEL_TYPES = ("autoencoder", "predictor")
THRESHOLD_METHODS = ("reference", "quantile")
# The reference prototype's SLO limits: 99th percentile for CPU, 95th for memory.
DEFAULT_SLO_PERCENTILES = {"*cpu*": 99.0, "*mem*": 95.0}


class ConfigError(ValueError):
    """Raised for an invalid configuration value, with the path of the value and the fix."""


@dataclass(frozen=True)
class ThresholdConfig:
    """How reconstruction errors become anomaly labels.

    The defaults were chosen on the labelled shared data (ASD and SMD
    servers); ``docs/detection.md`` has the measurements behind each one.

    Attributes:
        method: ``"reference"`` is the prototype's rule: per-feature Gaussian on
            validation absolute errors, ``high = mean + sigma * std``, and a
            window is anomalous when any point of any feature exceeds ``high``.
            ``"quantile"`` (default) divides each feature's error by its
            validation quantile, averages the largest of these ratios, smooths
            over time and compares with a multiple of that score's validation
            quantile.
        sigma: width of the Gaussian band for ``reference``. Default 3.
        quantile: validation quantile of each feature's error that divides
            it (``quantile`` method). Default 0.999, so that a feature's ratio
            reaches 1 only at the edge of what validation data showed.
        score_quantile: validation quantile of the anomaly score that, times
            ``factor``, is the score threshold. Default 0.995; None uses
            ``quantile``.
        factor: multiplier on the validation quantile of the anomaly score.
            Default 1.
        smoothing: points in the trailing mean of the anomaly score. Default 6.
            The mean looks only backwards, so scores stay causal.
        top_features: average only the largest normalised errors of this many
            features (0 means all features). Default 3: an incident usually
            shows in a few metrics, and averaging over all of them dilutes it.
        min_threshold: floor on every per-feature threshold, so a constant
            feature (zero validation error) still has a threshold above 0.
        exclude_constant: leave features that were constant in the training
            data out of the anomaly score (``quantile`` method). Default True:
            such a feature has no learnt normal range, so any later change of
            it would dominate the score. Its errors are still reported.
    """

    method: str = "quantile"
    sigma: float = 3.0
    quantile: float = 0.999
    score_quantile: float | None = 0.995
    factor: float = 1.0
    smoothing: int = 6
    top_features: int = 3
    min_threshold: float = 1e-6
    exclude_constant: bool = True


@dataclass(frozen=True)
class GroupConfig:
    """One metric group: a set of series modelled together by one autoencoder.

    Attributes:
        name: group name, used in storage keys and output rows.
        weight: weight of the group in the vote across groups.
        layout: ``"metrics"``: each entity contributes windows of the group's
            metrics to one shared model (a fleet of hosts, one model).
            ``"nodes"``: the features are one metric on several entities (the
            prototype's ``cpu`` of node1..node3); the group has one series.
        metrics: metric names; ``["*"]`` means every metric seen in training.
        entities: entity names; ``["*"]`` means every entity. Required for
            ``nodes``, where their order is the feature order.
        timesteps: rows in one window. Default 60.
        train_stride: rows between the starts of training windows. Default a
            sixth of ``timesteps`` (10 rows for 60). The reference cuts at
            half a window (30); three times as many windows scored better on
            the labelled servers (docs/detection.md).
        units: LSTM units of encoder, bidirectional bottleneck and decoder.
        epochs, batch_size, learning_rate, validation_split: Keras ``fit``
            settings; defaults 20, 32, 0.001, 0.1.
        model_type: ``"autoencoder"`` or ``"predictor"`` (reconstructs the
            window and predicts the next ``look_ahead`` rows).
        look_ahead: rows predicted by the predictor variant. Default 10.
        threshold: see :class:`ThresholdConfig`.
        slo_percentiles: ``{metric pattern: percentile}``: each metric whose
            name matches a pattern (shell-style, case-insensitive, first match
            wins) gets the percentile of its training values, per entity, as
            its SLO limit. Default ``{"*cpu*": 99, "*mem*": 95}``; an empty
            mapping disables SLO checks.
    """

    name: str = "all"
    weight: float = 1.0
    layout: str = "metrics"
    metrics: tuple[str, ...] = ("*",)
    entities: tuple[str, ...] = ("*",)
    timesteps: int = 60
    train_stride: int = 10
    units: tuple[int, int, int] = (100, 100, 100)
    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 0.001
    validation_split: float = 0.1
    model_type: str = "autoencoder"
    look_ahead: int = 10
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    slo_percentiles: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SLO_PERCENTILES))


EPOCH_UNITS = ("auto", "s", "ms", "us", "ns")
AMBIGUOUS_TIMES = ("reject", "earliest", "latest")
CLOUDWATCH_STATISTICS = ("average", "sum", "min", "max", "count")
_TEMPLATE_FIELD = re.compile(r"\{([^{}]+)\}")


@dataclass(frozen=True)
class IngestConfig:
    """Mapping of the landing objects of every export format onto the curated schema.

    Column names apply to CSV and Parquet exports and match case-insensitively.
    The label settings apply to formats whose series carry labels: Prometheus
    ``query_range`` JSON and VictoriaMetrics exports (labels), InfluxDB line
    protocol (tags) and CloudWatch Metric Streams (dimensions).

    Attributes:
        timestamp_column: column with the sample time. Default ``"timestamp"``.
        entity_column: column with the entity (host, container) of long and
            wide exports. A wide export without it takes the entity from the
            object name (``node-1.csv.gz`` is entity ``node-1``). Default ``"entity"``.
        metric_column: metric name column of long exports. Default ``"metric"``.
        value_column: value column of long exports. Default ``"value"``.
        label_columns: further columns of long exports kept as labels (JSON):
            ``["*"]`` (default) keeps every other column, ``[]`` none.
        delimiter: CSV field delimiter; ``.tsv`` objects always use a tab. Default ``","``.
        thousands_separator: digit-group separator accepted in values when the
            groups are well formed (``1,234.5`` is 1234.5, ``1,5`` is rejected).
            ``""`` accepts none. Default ``","``.
        timestamp_format: ``strptime`` format of text timestamps, e.g.
            ``"%d.%m.%Y %H:%M"``. ``None`` (default) accepts ISO 8601 and epoch numbers.
        epoch_unit: unit of epoch numbers in CSV and Parquet: ``"s"``, ``"ms"``,
            ``"us"``, ``"ns"`` or ``"auto"`` (default), which reads magnitudes
            below 1e11 as seconds, below 1e14 as milliseconds, below 1e17 as
            microseconds and larger ones as nanoseconds.
        ambiguous_time: naive local times in the repeated hour when clocks go
            back: ``"reject"`` (default) quarantines them, ``"earliest"`` or
            ``"latest"`` picks the first or second occurrence.
        entity_labels: labels, tags or dimensions tried in order for the
            entity. Default ``["instance", "host", "InstanceId"]``.
        strip_port: drop a trailing ``:port`` from the entity
            (``node-1:9100`` becomes ``node-1``). Default True.
        metric_name: metric name of Prometheus and VictoriaMetrics series, a
            template of ``{label}`` fields. Default ``"{__name__}"``.
        influx_metric_name: metric name of InfluxDB fields, a template of
            ``{measurement}``, ``{field}`` and tags. Default ``"{measurement}_{field}"``.
        influx_precision: unit of line-protocol timestamps (``"s"``, ``"ms"``,
            ``"us"``, ``"ns"``). Default ``"ns"``, what Telegraf writes.
        cloudwatch_metric_name: metric name of CloudWatch records, a template of
            ``{namespace}``, ``{metric_name}``, ``{unit}`` and dimensions.
            Default ``"{metric_name}"``.
        cloudwatch_statistic: the value taken from a CloudWatch record:
            ``"average"`` (sum / count, default), ``"sum"``, ``"min"``,
            ``"max"``, ``"count"`` or a percentile the stream exports (``"p99"``).
        late_days: days after a sample's own day in which its object may
            still land. A run for day D also reads ``landing/date=D+1/`` ..
            ``D+late_days/`` and takes the rows of D from them. Default 0.
    """

    timestamp_column: str = "timestamp"
    entity_column: str = "entity"
    metric_column: str = "metric"
    value_column: str = "value"
    label_columns: tuple[str, ...] = ("*",)
    delimiter: str = ","
    thousands_separator: str = ","
    timestamp_format: str | None = None
    epoch_unit: str = "auto"
    ambiguous_time: str = "reject"
    entity_labels: tuple[str, ...] = ("instance", "host", "InstanceId")
    strip_port: bool = True
    metric_name: str = "{__name__}"
    influx_metric_name: str = "{measurement}_{field}"
    influx_precision: str = "ns"
    cloudwatch_metric_name: str = "{metric_name}"
    cloudwatch_statistic: str = "average"
    late_days: int = 0


@dataclass(frozen=True)
class Config:
    """Settings of one lstmae deployment.

    Attributes:
        lake: URI of the lake root (``file:///...`` or ``s3://bucket/prefix``).
            Defaults to ``$LSTMAE_LAKE`` or ``./lake``.
        step: sampling grid as a pandas offset (``"5min"``, ``"1min"``).
        max_gap_steps: a missing grid point takes the last value before it
            for at most this many points (a forward fill, so a point never
            depends on later data); the rest of a longer gap stays missing
            and breaks windows. Default 3.
        vote_threshold: a window is an anomaly when the summed weights of the
            groups that flag it reach this value. Default 0.5.
        training_days: days of curated metrics a nightly training run reads.
        validation_fraction: last fraction of the training range, by time,
            used for thresholds and model gates. Default 0.3.
        seed: random seed for training. Default 42.
        promotion_tolerance: a new model is promoted when its validation error
            is at most ``(1 + tolerance)`` times the current model's. Default 0.1.
        min_training_windows: fewer training windows fail training. Default 8.
        drift_windows: consecutive anomalous windows that record a drift
            event and request retraining. Default 40.
        slo_windows: consecutive windows with a value above an SLO limit that
            raise an SLO violation. Default 3.
        incident_merge_steps: anomalous points of one entity and group at
            most this many grid steps apart belong to one incident. Default
            30: on the labelled shared data, shorter gaps split one episode
            into several incidents and raised the false alarms per day.
        min_incident_points: a closed incident with fewer anomalous points
            is not written. Default 6: on the labelled shared data this
            halved the false alarms per day and raised the event F1. An
            incident that is still open (within ``incident_merge_steps`` of
            the end of the interval or of a UTC day) is always written, since
            the next run may extend it.
        max_incident_plots: most incident plots (PNG) one combine run renders,
            highest peak score first; 0 renders none. Default 50. Each plot
            costs about half a second, so a fleet with thousands of incidents
            a day would spend most of its combine time drawing them; the
            anomalies page draws any incident on request.
        timezone: time zone applied to naive timestamps in exports. ``None``
            (default) rejects naive timestamps.
        ingest: how landing exports map onto curated rows; see :class:`IngestConfig`.
        groups: metric groups; default one group of all metrics.
    """

    lake: str = field(default_factory=lambda: os.environ.get("LSTMAE_LAKE", "lake"))
    step: str = "5min"
    max_gap_steps: int = 3
    vote_threshold: float = 0.5
    training_days: int = 30
    validation_fraction: float = 0.3
    seed: int = 42
    promotion_tolerance: float = 0.1
    min_training_windows: int = 8
    drift_windows: int = 40
    slo_windows: int = 3
    incident_merge_steps: int = 30
    min_incident_points: int = 6
    max_incident_plots: int = 50
    timezone: str | None = None
    ingest: IngestConfig = field(default_factory=IngestConfig)
    groups: tuple[GroupConfig, ...] = (GroupConfig(),)

    @property
    def step_delta(self) -> pd.Timedelta:
        return pd.Timedelta(self.step)

    def group(self, name: str) -> GroupConfig:
        for group in self.groups:
            if group.name == name:
                return group
        raise ConfigError(f"Unknown group {name!r}. Configured groups: {[g.name for g in self.groups]}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _fail(path: str, message: str, value: Any) -> ConfigError:
    return ConfigError(f"Invalid configuration value at {path}: {message}. Received: {value!r}.")


def _positive_int(path: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _fail(path, "expected a positive integer", value)
    return value


def _non_negative_int(path: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(path, "expected a non-negative integer", value)
    return value


def _integer(path: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, "expected an integer", value)
    return value


def _number(path: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise _fail(path, f"expected a number between {low} and {high}", value)
    return float(value)


def _optional_quantile(path: str, value: Any) -> float | None:
    return None if value is None else _number(path, value, 0.5, 1.0)


def _boolean(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(path, "expected true or false", value)
    return value


def _choice(path: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise _fail(path, f"expected one of {', '.join(allowed)}", value)
    return value


def _names(path: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise _fail(path, "expected a non-empty list of names", value)
    return tuple(value)


def _check_keys(path: str, data: dict, allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(
            f"Unknown configuration key(s) {unknown} at {path}. Allowed keys: {sorted(allowed)}."
        )


def _threshold_from_dict(path: str, data: dict) -> ThresholdConfig:
    if not isinstance(data, dict):
        raise _fail(path, "expected a mapping", data)
    _check_keys(path, data, {f.name for f in dataclasses.fields(ThresholdConfig)})
    base = ThresholdConfig()
    return ThresholdConfig(
        method=_choice(f"{path}.method", data.get("method", base.method), THRESHOLD_METHODS),
        sigma=_number(f"{path}.sigma", data.get("sigma", base.sigma), 0.0, 100.0),
        quantile=_number(f"{path}.quantile", data.get("quantile", base.quantile), 0.5, 1.0),
        score_quantile=_optional_quantile(f"{path}.score_quantile", data.get("score_quantile", base.score_quantile)),
        factor=_number(f"{path}.factor", data.get("factor", base.factor), 0.01, 100.0),
        smoothing=_positive_int(f"{path}.smoothing", data.get("smoothing", base.smoothing)),
        top_features=_non_negative_int(f"{path}.top_features", data.get("top_features", base.top_features)),
        min_threshold=_number(f"{path}.min_threshold", data.get("min_threshold", base.min_threshold), 0.0, 1e12),
        exclude_constant=_boolean(f"{path}.exclude_constant", data.get("exclude_constant", base.exclude_constant)),
    )


def _group_from_dict(path: str, data: dict) -> GroupConfig:
    if not isinstance(data, dict):
        raise _fail(path, "expected a mapping", data)
    _check_keys(path, data, {f.name for f in dataclasses.fields(GroupConfig)})
    base = GroupConfig()
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(f"{path}.name", "every group needs a non-empty name", name)
    units = data.get("units", list(base.units))
    if not isinstance(units, list) or len(units) != 3:
        raise _fail(f"{path}.units", "expected three integers [encoder, bottleneck, decoder]", units)
    layout = _choice(f"{path}.layout", data.get("layout", base.layout), LAYOUTS)
    entities = _names(f"{path}.entities", data.get("entities", list(base.entities)))
    if layout == "nodes" and "*" in entities:
        raise _fail(f"{path}.entities", "layout 'nodes' needs the list of entities that form its features", entities)
    timesteps = _positive_int(f"{path}.timesteps", data.get("timesteps", base.timesteps))
    if timesteps < 2:
        raise _fail(f"{path}.timesteps", "a window needs at least 2 rows", timesteps)
    slo = data.get("slo_percentiles", dict(DEFAULT_SLO_PERCENTILES))
    if slo is None:
        slo = {}
    if not isinstance(slo, dict) or not all(isinstance(k, str) and k for k in slo):
        raise _fail(f"{path}.slo_percentiles", "expected a mapping of metric name or pattern to a percentile, "
                    "e.g. {'*cpu*': 99, '*mem*': 95}, or {} to disable SLO checks", slo)
    return GroupConfig(
        name=name,
        weight=_number(f"{path}.weight", data.get("weight", base.weight), 0.0, 1.0),
        layout=layout,
        metrics=_names(f"{path}.metrics", data.get("metrics", list(base.metrics))),
        entities=entities,
        timesteps=timesteps,
        train_stride=_positive_int(f"{path}.train_stride", data.get("train_stride", max(1, timesteps // 6))),
        units=tuple(_positive_int(f"{path}.units[{i}]", u) for i, u in enumerate(units)),
        epochs=_positive_int(f"{path}.epochs", data.get("epochs", base.epochs)),
        batch_size=_positive_int(f"{path}.batch_size", data.get("batch_size", base.batch_size)),
        learning_rate=_number(f"{path}.learning_rate", data.get("learning_rate", base.learning_rate), 1e-7, 1.0),
        validation_split=_number(f"{path}.validation_split", data.get("validation_split", base.validation_split), 0.0, 0.5),
        model_type=_choice(f"{path}.model_type", data.get("model_type", base.model_type), MODEL_TYPES),
        look_ahead=_positive_int(f"{path}.look_ahead", data.get("look_ahead", base.look_ahead)),
        threshold=_threshold_from_dict(f"{path}.threshold", data.get("threshold", {})),
        slo_percentiles={
            str(k): _number(f"{path}.slo_percentiles.{k}", v, 0.0, 100.0) for k, v in slo.items()
        },
    )


def _template(path: str, value: Any) -> str:
    if not isinstance(value, str) or not _TEMPLATE_FIELD.search(value):
        raise _fail(path, "expected a template with at least one {field}, such as '{__name__}'", value)
    if "{" in _TEMPLATE_FIELD.sub("", value) or "}" in _TEMPLATE_FIELD.sub("", value):
        raise _fail(path, "unbalanced braces in the template", value)
    return value


def _text(path: str, value: Any, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not empty):
        raise _fail(path, "expected a non-empty string" if not empty else "expected a string", value)
    return value


def _ingest_from_dict(path: str, data: Any) -> IngestConfig:
    if not isinstance(data, dict):
        raise _fail(path, "expected a mapping", data)
    _check_keys(path, data, {f.name for f in dataclasses.fields(IngestConfig)})
    base = IngestConfig()
    delimiter = _text(f"{path}.delimiter", data.get("delimiter", base.delimiter))
    if len(delimiter) != 1 or delimiter in "\"\r\n":
        raise _fail(f"{path}.delimiter", "expected one character other than a quote or a line break", delimiter)
    separator = _text(f"{path}.thousands_separator", data.get("thousands_separator", base.thousands_separator), empty=True)
    if len(separator) > 1 or separator == ".":
        raise _fail(f"{path}.thousands_separator", "expected one character other than '.', or ''", separator)
    timestamp_format = data.get("timestamp_format", base.timestamp_format)
    if timestamp_format is not None and (not isinstance(timestamp_format, str) or "%" not in timestamp_format):
        raise _fail(f"{path}.timestamp_format", "expected a strptime format such as '%d.%m.%Y %H:%M', or null", timestamp_format)
    label_columns = data.get("label_columns", list(base.label_columns))
    if isinstance(label_columns, str) or not isinstance(label_columns, list) or not all(isinstance(c, str) and c for c in label_columns):
        raise _fail(f"{path}.label_columns", "expected a list of column names, ['*'] or []", label_columns)
    strip_port = data.get("strip_port", base.strip_port)
    if not isinstance(strip_port, bool):
        raise _fail(f"{path}.strip_port", "expected true or false", strip_port)
    statistic = _text(f"{path}.cloudwatch_statistic", data.get("cloudwatch_statistic", base.cloudwatch_statistic))
    if statistic not in CLOUDWATCH_STATISTICS and not re.fullmatch(r"p\d{1,2}(\.\d+)?", statistic):
        raise _fail(f"{path}.cloudwatch_statistic", f"expected one of {', '.join(CLOUDWATCH_STATISTICS)} or a percentile such as p99", statistic)
    late_days = data.get("late_days", base.late_days)
    if isinstance(late_days, bool) or not isinstance(late_days, int) or not 0 <= late_days <= 31:
        raise _fail(f"{path}.late_days", "expected an integer from 0 to 31", late_days)
    return IngestConfig(
        timestamp_column=_text(f"{path}.timestamp_column", data.get("timestamp_column", base.timestamp_column)),
        entity_column=_text(f"{path}.entity_column", data.get("entity_column", base.entity_column)),
        metric_column=_text(f"{path}.metric_column", data.get("metric_column", base.metric_column)),
        value_column=_text(f"{path}.value_column", data.get("value_column", base.value_column)),
        label_columns=tuple(label_columns),
        delimiter=delimiter,
        thousands_separator=separator,
        timestamp_format=timestamp_format,
        epoch_unit=_choice(f"{path}.epoch_unit", data.get("epoch_unit", base.epoch_unit), EPOCH_UNITS),
        ambiguous_time=_choice(f"{path}.ambiguous_time", data.get("ambiguous_time", base.ambiguous_time), AMBIGUOUS_TIMES),
        entity_labels=_names(f"{path}.entity_labels", data.get("entity_labels", list(base.entity_labels))),
        strip_port=strip_port,
        metric_name=_template(f"{path}.metric_name", data.get("metric_name", base.metric_name)),
        influx_metric_name=_template(f"{path}.influx_metric_name", data.get("influx_metric_name", base.influx_metric_name)),
        influx_precision=_choice(f"{path}.influx_precision", data.get("influx_precision", base.influx_precision), EPOCH_UNITS[1:]),
        cloudwatch_metric_name=_template(f"{path}.cloudwatch_metric_name", data.get("cloudwatch_metric_name", base.cloudwatch_metric_name)),
        cloudwatch_statistic=statistic,
        late_days=late_days,
    )


def config_from_dict(data: dict | None) -> Config:
    """Build and validate a :class:`Config` from parsed YAML."""
    data = data or {}
    if not isinstance(data, dict):
        raise _fail("<root>", "expected a mapping", data)
    _check_keys("<root>", data, {f.name for f in dataclasses.fields(Config)})
    base = Config()
    step = data.get("step", base.step)
    try:
        if pd.Timedelta(step) <= pd.Timedelta(0):
            raise ValueError
    except (ValueError, TypeError):
        raise _fail("step", "expected a positive duration such as '5min' or '1min'", step) from None
    groups_data = data.get("groups")
    groups = base.groups
    if groups_data is not None:
        if not isinstance(groups_data, list) or not groups_data:
            raise _fail("groups", "expected a non-empty list of groups", groups_data)
        groups = tuple(_group_from_dict(f"groups[{i}]", g) for i, g in enumerate(groups_data))
        names = [g.name for g in groups]
        if len(set(names)) != len(names):
            raise _fail("groups", "group names must be unique", names)
        total = sum(g.weight for g in groups)
        if abs(total - 1.0) > 1e-6:
            raise _fail("groups[*].weight", "group weights must sum to 1", total)
    timezone = data.get("timezone", base.timezone)
    if timezone is not None:
        try:
            pd.Timestamp("2000-01-01").tz_localize(timezone)
        except Exception:
            raise _fail("timezone", "expected an IANA time zone name such as Europe/Berlin", timezone) from None
    return Config(
        lake=str(data.get("lake", base.lake)),
        step=str(step),
        max_gap_steps=int(_number("max_gap_steps", data.get("max_gap_steps", base.max_gap_steps), 0, 10_000)),
        vote_threshold=_number("vote_threshold", data.get("vote_threshold", base.vote_threshold), 0.0, 1.0),
        training_days=_positive_int("training_days", data.get("training_days", base.training_days)),
        validation_fraction=_number("validation_fraction", data.get("validation_fraction", base.validation_fraction), 0.05, 0.9),
        seed=_integer("seed", data.get("seed", base.seed)),
        promotion_tolerance=_number("promotion_tolerance", data.get("promotion_tolerance", base.promotion_tolerance), 0.0, 100.0),
        min_training_windows=_positive_int("min_training_windows", data.get("min_training_windows", base.min_training_windows)),
        drift_windows=_positive_int("drift_windows", data.get("drift_windows", base.drift_windows)),
        slo_windows=_positive_int("slo_windows", data.get("slo_windows", base.slo_windows)),
        incident_merge_steps=_non_negative_int("incident_merge_steps", data.get("incident_merge_steps", base.incident_merge_steps)),
        min_incident_points=_positive_int("min_incident_points", data.get("min_incident_points", base.min_incident_points)),
        max_incident_plots=_non_negative_int("max_incident_plots", data.get("max_incident_plots", base.max_incident_plots)),
        timezone=timezone,
        ingest=_ingest_from_dict("ingest", data.get("ingest") or {}),
        groups=groups,
    )


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load the configuration from ``path``, ``$LSTMAE_CONFIG``, or the defaults."""
    path = path or os.environ.get("LSTMAE_CONFIG")
    if not path:
        return config_from_dict({})
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"Invalid YAML in {path}: {error}") from None
    try:
        return config_from_dict(data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
