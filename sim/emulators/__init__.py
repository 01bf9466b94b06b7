"""Physics-backed devices that speak real wire protocols, for hardware-in-the-loop runs.

`feetech`: a Feetech STS3215 servo bus on a pseudo-terminal, backed by the MuJoCo SO-101 arm
(`protocol` holds its packet codec, `sts3215` the servo's control table).
"""
