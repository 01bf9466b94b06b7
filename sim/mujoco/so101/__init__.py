"""The SO-101 arm (TheRobotStudio SO-ARM100) on a table, for the Feetech servo-bus emulator."""
