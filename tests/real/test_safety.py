import io
import logging
import signal

import numpy as np
import pytest

from real.safety import INTERVENTIONS, SafetyLayer, SafetyLimits


def make_layer(**overrides):
    limits = {"low": [-1.0, -1.0], "high": [1.0, 1.0], "watchdog_timeout_s": 0.1} | overrides
    stops = []
    layer = SafetyLayer(SafetyLimits(**limits), on_stop=stops.append)
    layer.reset(np.zeros(2))
    return layer, stops


def test_an_action_inside_the_limits_passes_unchanged():
    layer, _ = make_layer(max_step=[0.5, 0.5])
    action, interventions = layer.filter(np.array([0.3, -0.2]), now=0.0)
    np.testing.assert_array_equal(action, [0.3, -0.2])
    assert interventions == () and not any(layer.counts.values())


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_actions_hold_the_last_safe_action(bad, caplog):
    layer, _ = make_layer()
    layer.filter(np.array([0.5, 0.5]), now=0.0)
    action, interventions = layer.filter(np.array([bad, 0.0]), now=0.01)
    np.testing.assert_array_equal(action, [0.5, 0.5])
    assert interventions == ("nonfinite",) and layer.counts["nonfinite"] == 1
    assert "safety nonfinite" in caplog.text


def test_nonfinite_actions_use_the_hold_action_when_set():
    layer = SafetyLayer(SafetyLimits(low=[-1, -1], high=[1, 1], hold_action=[0, -1]))
    action, _ = layer.filter(np.array([0.2, np.nan]), now=0.0)
    np.testing.assert_array_equal(action, [0, -1])


def test_range_clipping(caplog):
    caplog.set_level(logging.INFO)
    layer, _ = make_layer()
    action, interventions = layer.filter(np.array([2.0, -0.5]), now=0.0)
    np.testing.assert_array_equal(action, [1.0, -0.5])
    assert interventions == ("range",) and layer.counts["range"] == 1
    assert "safety range" in caplog.text


def test_slew_rate_limiting_from_the_reference():
    layer, _ = make_layer(max_step=[0.1, 0.5])
    action, interventions = layer.filter(np.array([0.4, -0.4]), now=0.0)
    np.testing.assert_allclose(action, [0.1, -0.4])  # |0.4 - 0| > 0.1; |-0.4 - 0| <= 0.5
    assert interventions == ("slew",)
    action, _ = layer.filter(np.array([0.4, -0.4]), now=0.01)  # from 0.1, one more step of 0.1
    np.testing.assert_allclose(action, [0.2, -0.4])
    assert layer.counts["slew"] == 2


def test_workspace_box_holds_when_the_end_effector_would_leave_it():
    layer, _ = make_layer(workspace_low=[-0.5, -0.5, 0.0], workspace_high=[0.5, 0.5, 0.5])

    # A toy kinematics: the end effector goes to (a0, a1, 0.1).
    def predict(action):
        return np.array([action[0], action[1], 0.1])

    action, interventions = layer.filter(np.array([0.4, 0.0]), now=0.0, predict_position=predict)
    assert interventions == ()
    action, interventions = layer.filter(np.array([0.8, 0.0]), now=0.01, predict_position=predict)
    np.testing.assert_array_equal(action, [0.4, 0.0])
    assert interventions == ("workspace",) and layer.counts["workspace"] == 1
    with pytest.raises(ValueError, match="predict_position"):
        layer.filter(np.array([0.0, 0.0]), now=0.02)
    with pytest.raises(ValueError, match=r"finite \[3\]"):
        layer.filter(np.array([0.0, 0.0]), now=0.02, predict_position=lambda a: np.zeros(2))


def test_watchdog_fires_within_its_timeout():
    layer, stops = make_layer(watchdog_timeout_s=0.1)
    assert not layer.check(now=100.0)  # not armed before the first command
    layer.filter(np.zeros(2), now=0.0)
    now, dt = 0.0, 0.001
    while not layer.check(now):
        now += dt
        assert now < 1.0
    assert 0.1 < now <= 0.1 + 2 * dt
    assert layer.counts["watchdog"] == 1 and len(stops) == 1 and stops[0].startswith("watchdog")
    action, interventions = layer.filter(np.array([0.5, 0.5]), now=now)
    np.testing.assert_array_equal(action, [0.0, 0.0])
    assert interventions == ("stopped",)


def test_fresh_commands_keep_the_watchdog_quiet_and_nonfinite_ones_do_not():
    layer, stops = make_layer(watchdog_timeout_s=0.1)
    for tick in range(100):
        layer.filter(np.zeros(2), now=tick * 0.05)
        assert not layer.check(now=tick * 0.05 + 0.01)
    layer.filter(np.array([np.nan, 0.0]), now=5.0)
    assert layer.check(now=5.06) and stops


def test_estop_api_stops_once_until_reset():
    layer, stops = make_layer()
    layer.estop("operator")
    layer.estop("operator again")
    assert layer.stopped and stops == ["e-stop: operator"] and layer.counts["estop"] == 2
    _, interventions = layer.filter(np.array([0.1, 0.1]), now=0.0)
    assert interventions == ("stopped",)
    layer.reset(np.zeros(2))
    assert not layer.stopped
    assert layer.filter(np.array([0.1, 0.1]), now=0.0)[1] == ()


def test_first_signal_stops_and_second_exits_hard():
    exits, stops = [], []
    layer = SafetyLayer(SafetyLimits(low=[-1], high=[1]), on_stop=stops.append, hard_exit=exits.append)
    previous = signal.getsignal(signal.SIGINT)
    layer.install_signal_handlers()  # SIGINT and SIGTERM
    try:
        signal.raise_signal(signal.SIGINT)
        assert layer.stopped and len(stops) == 1 and "SIGINT" in stops[0] and exits == []
        signal.raise_signal(signal.SIGTERM)
        assert exits == [128 + signal.SIGTERM] and len(stops) == 1
    finally:
        layer.restore_signal_handlers()
    assert signal.getsignal(signal.SIGINT) is previous


def test_key_listener_stops_on_its_key():
    layer, stops = make_layer()
    layer.start_key_listener(io.StringIO("x\nhello\nq\n"), key="q").join(timeout=5)
    assert stops == ["e-stop: key 'q'"]


def test_counts_cover_every_kind():
    layer, _ = make_layer()
    assert set(layer.counts) == set(INTERVENTIONS)


def test_inputs_are_validated():
    layer, _ = make_layer()
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        layer.filter(np.zeros(3), now=0.0)
    with pytest.raises(RuntimeError, match="reset"):
        SafetyLayer(SafetyLimits(low=[-1], high=[1])).filter(np.zeros(1), now=0.0)
    for bad, match in [
        ({"high": [1.0]}, "high"),
        ({"low": [2.0, 2.0]}, "low <= high"),
        ({"max_step": [0.0, 1.0]}, "max_step"),
        ({"workspace_low": [0, 0, 0]}, "together"),
        ({"workspace_low": [1, 1, 1], "workspace_high": [0, 0, 0]}, "workspace_low <="),
        ({"hold_action": [5.0, 0.0]}, "hold_action"),
        ({"watchdog_timeout_s": 0.0}, "watchdog_timeout_s"),
        ({"low": [np.nan, 0.0]}, "finite"),
    ]:
        with pytest.raises(ValueError, match=match):
            make_layer(**bad)
