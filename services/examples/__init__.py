"""Example services: a small support desk used by the demo and the tests."""
