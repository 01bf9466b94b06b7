"""Arms: the SO-101 (LeRobot's ``SO101Follower`` on a Feetech STS3215 bus)."""
