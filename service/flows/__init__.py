"""Flows: the one service package that calls the matcher (routes and jobs call flows)."""
