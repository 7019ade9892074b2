"""Evaluation metrics on tiny hand-computed arrays, and the file-level front end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lstmae import evaluate as ev
from lstmae import schema

STEP = pd.Timedelta("5min")


def times(n: int) -> pd.DatetimeIndex:
    return pd.date_range("2026-10-01", periods=n, freq=STEP, tz="UTC")


def test_label_segments_runs():
    assert ev.label_segments(np.array([1, 1, 0, 0, 1, 0, 1, 1, 1])) == [(0, 1), (4, 4), (6, 8)]
    assert ev.label_segments(np.array([0, 0])) == []


def test_point_metrics_counts():
    labels = np.array([0, 1, 1, 1, 0, 0, 1, 0])
    flagged = np.array([0, 1, 0, 1, 1, 0, 0, 0])
    result = ev.point_metrics(labels, flagged)
    # tp: positions 1, 3; fp: 4; fn: 2, 6.
    assert (result["tp"], result["fp"], result["fn"]) == (2, 1, 2)
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["recall"] == pytest.approx(2 / 4)
    assert result["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


def test_point_metrics_nothing_flagged():
    result = ev.point_metrics(np.array([0, 1]), np.array([0, 0]))
    assert result["precision"] == 0.0
    assert result["f1"] == 0.0


def test_point_metrics_shape_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        ev.point_metrics(np.array([0, 1]), np.array([0, 1, 1]))


def test_point_adjusted_fills_segment():
    labels = np.array([0, 1, 1, 1, 0, 1, 1, 0])
    flagged = np.array([1, 0, 1, 0, 0, 0, 0, 0])
    adjusted = ev.point_adjust(labels, flagged)
    assert adjusted.astype(int).tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    result = ev.point_metrics(labels, adjusted)
    # tp 3 (first segment), fp 1 (position 0), fn 2 (second segment).
    assert (result["tp"], result["fp"], result["fn"]) == (3, 1, 2)


def test_best_f1_picks_oracle_threshold():
    labels = np.array([0, 0, 1, 1, 0])
    scores = np.array([0.1, 0.5, 0.9, 0.7, 0.3])
    result = ev.best_f1(labels, scores)
    # score >= 0.7 flags exactly the two labelled points.
    assert result["f1"] == pytest.approx(1.0)
    assert result["threshold"] == pytest.approx(0.7)


def test_best_f1_ties_flag_together():
    labels = np.array([1, 0, 0])
    scores = np.array([0.5, 0.5, 0.1])
    result = ev.best_f1(labels, scores)
    # The tie at 0.5 is flagged as a whole: precision 1/2, recall 1, F1 2/3.
    assert result["f1"] == pytest.approx(2 / 3)
    assert result["precision"] == pytest.approx(0.5)


def test_best_f1_ignores_unscored_points():
    labels = np.array([1, 1, 0])
    scores = np.array([np.nan, 0.8, 0.2])
    result = ev.best_f1(labels, scores)
    # Best is flagging only 0.8: precision 1, recall 1/2.
    assert result["f1"] == pytest.approx(2 / 3)


def test_average_precision_by_hand():
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    # Thresholds: 0.9 -> P 1, R 0.5; 0.8 -> P 0.5, R 0.5; 0.7 -> P 2/3, R 1; 0.1 -> P 0.5, R 1.
    # AP = 0.5 * 1 + 0 * 0.5 + 0.5 * 2/3 + 0 * 0.5.
    assert ev.average_precision(labels, scores) == pytest.approx(0.5 + 1 / 3)


def test_average_precision_perfect_and_no_labels():
    assert ev.average_precision(np.array([0, 1, 1]), np.array([0.0, 2.0, 1.0])) == pytest.approx(1.0)
    assert ev.average_precision(np.array([0, 0]), np.array([0.1, 0.2])) == 0.0


def test_vus_pr_without_buffer_by_hand():
    labels = np.array([0, 1, 1, 0])
    scores = np.array([0.9, 0.8, 0.1, 0.2])
    # Thresholds 0.9, 0.8, 0.2, 0.1: recall 0, 1/2, 1/2, 1 and precision 0, 1/2, 1/3, 1/2.
    # Range AP = 1/2 * 1/2 + 1/2 * 1/2 = 0.5; buffers 0 and 1 widen nothing.
    assert ev.vus_pr(labels, scores, max_buffer=1, thresholds=4) == pytest.approx(0.5)


def test_vus_pr_with_buffer_by_hand():
    labels = np.array([0, 1, 1, 0])
    scores = np.array([0.9, 0.8, 0.1, 0.2])
    # Buffer 2 widens the segment by one point each side with label r = sqrt(1 - 1/2).
    # Flagged widened points count half in P' = 2 + hits / 2.
    r = np.sqrt(0.5)
    p_one, p_two = 2 + r / 2, 2 + r
    recalls = [r / p_one, (1 + r) / p_one, (1 + 2 * r) / p_two, 1.0]
    precisions = [r, (1 + r) / 2, (1 + 2 * r) / 3, (2 + 2 * r) / 4]
    area = sum((high - low) * precision for low, high, precision in zip([0.0] + recalls[:-1], recalls, precisions))
    assert ev.vus_pr(labels, scores, max_buffer=2, thresholds=4) == pytest.approx((0.5 + 0.5 + area) / 3)


def test_vus_pr_no_labels():
    assert ev.vus_pr(np.array([0, 0, 0]), np.array([0.1, 0.2, 0.3])) == 0.0


def test_event_metrics_overlap_rules():
    t = times(20)
    labelled = [ev.Event(t[2], t[4]), ev.Event(t[10], t[12]), ev.Event(t[16], t[17])]
    predicted = [
        ev.Event(t[0], t[2]),    # overlaps segment 1 at its first point: delay 0
        ev.Event(t[3], t[3]),    # a second incident on segment 1: no extra TP
        ev.Event(t[12], t[13]),  # overlaps segment 2, starts 2 steps late
        ev.Event(t[7], t[8]),    # overlaps nothing: FP
    ]
    result = ev.event_metrics(labelled, predicted)
    assert (result["tp"], result["fp"], result["fn"]) == (2, 1, 1)
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["recall"] == pytest.approx(2 / 3)
    assert result["delays"] == [pd.Timedelta(0), 2 * STEP]


def test_incidents_from_points_merge_gap():
    t = times(12)
    flagged = np.array([1, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0])
    events = ev.incidents_from_points(t, flagged, STEP, merge_steps=3)
    # 0 and 3 are 3 steps apart (merged); 3 and 8 are 5 apart (split).
    assert events == [ev.Event(t[0], t[3]), ev.Event(t[8], t[9])]


def test_hit_rate_by_hand():
    ranked = [["m1", "m2", "m3", "m4"], ["m4", "m3", "m2", "m1"]]
    truth = [{"m1", "m3"}, {"m1", "m2", "m3"}]
    # 100 %: top-2 {m1, m2} hits 1/2; top-3 {m4, m3, m2} hits 2/3. Mean 7/12.
    assert ev.hit_rate(ranked, truth, 100) == pytest.approx((1 / 2 + 2 / 3) / 2)
    # 150 %: top-3 {m1, m2, m3} hits 2/2; top-4 (floor 4.5) hits 3/3. Mean 1.
    assert ev.hit_rate(ranked, truth, 150) == pytest.approx(1.0)
    assert ev.hit_rate([], [], 100) is None


def test_evaluate_series_counts_false_alarms_per_normal_day():
    n = 288 * 2  # two days of 5-minute points
    t = times(n)
    labels = np.zeros(n, dtype=int)
    labels[100:110] = 1
    flagged = np.zeros(n, dtype=bool)
    flagged[105:112] = True  # hits the segment
    flagged[300:302] = True  # one false alarm
    scores = flagged.astype(float)
    incidents = ev.incidents_from_points(t, flagged, STEP, 6)
    report = ev.evaluate_series(t, labels, scores, flagged, incidents, STEP)
    assert report["event"]["tp"] == 1
    assert report["event"]["fp"] == 1
    assert report["normal_days"] == pytest.approx((n - 10) / 288)
    assert report["false_alarms_per_day"] == pytest.approx(1 / ((n - 10) / 288))
    assert report["delay_steps_mean"] == pytest.approx(5.0)
    assert report["point"]["tp"] == 5
    assert report["point"]["fp"] == 4


def write_scores(path, entity: str, t: pd.DatetimeIndex, scores, flagged, ratios: dict[str, list[float]]):
    rows = []
    for i, stamp in enumerate(t):
        rows.append({
            "timestamp": stamp, "entity": entity, "group": "all", "model_version": "v1", "status": "scored",
            "reason": None, "anomaly_score": float(scores[i]), "score_threshold": 0.5, "is_anomaly": bool(flagged[i]),
            "early_warning_score": None,
            "feature_errors": [
                {"feature": f, "value": 0.0, "reconstruction": 0.0, "error": r[i], "threshold": 1.0, "ratio": r[i]}
                for f, r in ratios.items()
            ],
        })
    table = pa.Table.from_pylist(rows, schema=schema.SCORES)
    pq.write_table(table, path)


def test_evaluate_scores_from_parquet(tmp_path):
    t = times(10)
    labels = pd.DataFrame({"timestamp": t, "label": [0, 0, 1, 1, 1, 0, 0, 0, 0, 0]})
    scores = np.array([0.1, 0.2, 0.9, 0.8, 0.3, 0.2, 0.1, 0.6, 0.1, 0.1])
    flagged = scores > 0.5
    # At points 2 and 3 metric a leads, then b, then c.
    ratios = {"a": [0, 0, 3, 3, 0, 0, 0, 0, 0, 0], "b": [0, 0, 2, 2, 0, 0, 0, 0, 0, 0], "c": [0] * 10}
    path = tmp_path / "scores.parquet"
    write_scores(path, "host-1", t, scores, flagged, ratios)
    interpretation = pd.DataFrame({"start": [t[2]], "end": [t[4]], "metrics": [("a", "c")]})

    frame = ev.read_scores(str(path))
    report = ev.evaluate_scores(frame, labels, interpretation, merge_steps=1)
    entity = report["entities"]["host-1"]
    assert (entity["point"]["tp"], entity["point"]["fp"], entity["point"]["fn"]) == (2, 1, 1)
    assert (entity["event"]["tp"], entity["event"]["fp"]) == (1, 1)
    # Two flagged labelled points, each ranking a, b, c: @100 % top-2 {a, b} hits 1 of 2.
    assert entity["attribution_points"] == 2
    assert entity["hit_rate"]["100"] == pytest.approx(0.5)
    assert entity["hit_rate"]["150"] == pytest.approx(1.0)
    assert report["summary"]["mean"]["point_f1"] == pytest.approx(entity["point"]["f1"])

    markdown = ev.write_report(report, tmp_path / "report.json", tmp_path / "report.md")
    assert "| host-1 |" in markdown
    assert json.loads((tmp_path / "report.json").read_text())["entities"]["host-1"]["event"]["tp"] == 1


def test_read_labels_rejects_bad_values(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("timestamp,label\n2026-10-01T00:00:00Z,0\n2026-10-01T00:05:00Z,2\n")
    with pytest.raises(ValueError, match=r"label 2 on data row 2 is not 0 or 1"):
        ev.read_labels(path)
    path.write_text("timestamp,value\n2026-10-01T00:00:00Z,0\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['label'\]"):
        ev.read_labels(path)
    path.write_text("timestamp,label\n2026-10-01T00:00:00,0\n")
    with pytest.raises(ValueError, match="no time zone"):
        ev.read_labels(path)


def test_labels_without_entity_need_a_choice():
    t = times(3)
    scores = pd.DataFrame({"timestamp": list(t) * 2, "entity": ["a"] * 3 + ["b"] * 3, "anomaly_score": 0.0,
                           "is_anomaly": False, "feature_errors": None})
    labels = pd.DataFrame({"timestamp": t, "label": [0, 1, 0]})
    with pytest.raises(ValueError, match="name one with entity"):
        ev.evaluate_scores(scores, labels)
    report = ev.evaluate_scores(scores, labels, entity="b")
    assert list(report["entities"]) == ["b"]
    assert report["entities"]["b"]["point"]["fn"] == 1


@pytest.mark.slow
def test_cli_evaluate_on_scored_lake(scored_lake, tmp_path, capsys):
    from lstmae import cli

    first, last = scored_lake["score_days"][0], scored_lake["score_days"][-1] + pd.Timedelta(days=1)
    stamps = pd.date_range(first, last, freq=STEP, inclusive="left")
    spike = (stamps >= pd.Timestamp("2026-09-05T10:00:00Z")) & (stamps < pd.Timestamp("2026-09-05T11:00:00Z"))
    labels = pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%SZ"), "entity": "host-a",
                           "label": spike.astype(int)})
    labels_path = tmp_path / "labels.csv"
    labels.to_csv(labels_path, index=False)
    report_path = tmp_path / "report.json"
    code = cli.main(["evaluate", "--lake", str(scored_lake["lake"]), "--config", str(scored_lake["config_path"]),
                     "--labels", str(labels_path), "--json", str(report_path)])
    assert code == 0
    assert "| host-a |" in capsys.readouterr().out
    report = json.loads(report_path.read_text())
    entity = report["entities"]["host-a"]
    assert entity["points"] == len(stamps)
    assert entity["labelled_points"] == 12
    assert entity["segments"] == 1
    # The synthetic spike is far outside normal, so its segment is found. The
    # trailing mean of 6 points keeps the score high for 5 points after the
    # spike, which caps the best F1 (0.74 measured with the tiny 2-epoch model).
    assert entity["event"]["tp"] == 1
    assert entity["best"]["f1"] > 0.6
