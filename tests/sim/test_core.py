import numpy as np
import pytest

from sim.core import InitStateSplit, check_seed, parse_reset_options, validate_actions
from sim.registry import Registry


def test_validate_actions_clips_and_flags_out_of_range():
    actions = np.array([[0.5, -0.5], [2.0, 0.0], [0.0, -3.0]])
    clipped, flagged = validate_actions(actions, 3, 2)
    np.testing.assert_array_equal(clipped, [[0.5, -0.5], [1.0, 0.0], [0.0, -1.0]])
    np.testing.assert_array_equal(flagged, [False, True, True])


def test_validate_actions_accepts_integer_arrays():
    clipped, _ = validate_actions(np.zeros((2, 3), np.int32), 2, 3)
    assert clipped.dtype == np.float64


@pytest.mark.parametrize(
    ("actions", "error", "message"),
    [
        (np.zeros((2, 6)), ValueError, r"shape \(num_envs, action_dim\) = \(2, 7\), got \(2, 6\)"),
        (np.zeros(7), ValueError, "got \\(7,\\)"),
        (np.array([["a"] * 7] * 2), TypeError, "real-valued numeric"),
        (np.array([[object()] * 7] * 2), TypeError, "real-valued numeric"),
        (np.zeros((2, 7), complex), TypeError, "real-valued numeric"),
        (np.array([[0.0] * 7, [np.nan] + [0.0] * 6]), ValueError, r"NaN or infinite values for envs \[1\]"),
        (np.array([[np.inf] * 7, [0.0] * 7]), ValueError, r"envs \[0\]"),
    ],
)
def test_validate_actions_rejects_bad_input(actions, error, message):
    with pytest.raises(error, match=message):
        validate_actions(actions, 2, 7)


@pytest.mark.parametrize("seed", [1.5, "3", [1], True])
def test_check_seed_rejects_wrong_types(seed):
    with pytest.raises(TypeError, match="seed must be an int or None"):
        check_seed(seed)


def test_check_seed_accepts_ints_and_rejects_negatives():
    assert check_seed(None) is None
    assert check_seed(np.int64(4)) == 4
    with pytest.raises(ValueError, match="non-negative"):
        check_seed(-1)


def test_parse_reset_options():
    request = parse_reset_options({"split": "eval", "tasks": "a", "init_state_ids": [0, 3]}, 2, ["a", "b"])
    assert request.split is InitStateSplit.EVAL
    assert request.tasks == ("a", "a")
    np.testing.assert_array_equal(request.init_state_ids, [0, 3])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"splt": "eval"}, "unknown reset option"),
        ({"split": "test"}, "'train' or 'eval'"),
        ({"tasks": ["a"]}, "must name 2 tasks"),
        ({"tasks": ["a", "zzz"]}, r"unknown task\(s\) \['zzz'\]; known tasks: \['a', 'b'\]"),
        ({"init_state_ids": [0]}, "must be 2 integers"),
        ({"init_state_ids": [0.5, 1.0]}, "must be 2 integers"),
        ({"init_state_ids": [0, -1]}, "non-negative"),
    ],
)
def test_parse_reset_options_rejects_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        parse_reset_options(options, 2, ["a", "b"])


def test_registry_is_lazy_and_lists_known_names():
    registry = Registry("widget")
    registry.register("sqrt", "math:sqrt")
    assert registry.get("sqrt")(9.0) == 3.0
    assert "sqrt" in registry
    with pytest.raises(KeyError, match="unknown widget 'cube'; known widgets: sqrt"):
        registry.get("cube")
    with pytest.raises(ValueError, match=r"package\.module:attribute"):
        registry.register("bad", "math.sqrt")
