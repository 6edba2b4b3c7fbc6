"""Experiments built on the framework: each runs training, checks and a report from one command."""
