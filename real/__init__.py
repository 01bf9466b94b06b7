"""Hardware: robot drivers behind LeRobot's `Robot` contract, and the safety layer.

Every action passes `real.safety` on its way from a policy to a driver.
"""
