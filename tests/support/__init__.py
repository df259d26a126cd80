"""Helpers shared by a unit test file and its integration counterpart (tests/ is on the path)."""
