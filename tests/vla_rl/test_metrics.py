from vla_rl.metrics import MetricsLogger, read_metrics


def test_read_metrics_keeps_the_last_value_of_a_step_logged_twice(tmp_path):
    metrics = MetricsLogger(tmp_path)
    metrics.log(0, {"eval/success_rate": 0.5})
    metrics.log(1, {"eval/success_rate": 0.25, "rl/loss": 2.0})
    metrics.close()
    # A resumed run appends to the same CSV and repeats the steps after its last checkpoint.
    resumed = MetricsLogger(tmp_path)
    resumed.log(0, {"eval/success_rate": 0.5})
    resumed.log(1, {"eval/success_rate": 0.75})
    resumed.close()
    assert read_metrics(tmp_path / "metrics.csv") == {
        "eval/success_rate": {0: 0.5, 1: 0.75},
        "rl/loss": {1: 2.0},
    }
