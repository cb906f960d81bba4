"""The optimisation core: market snapshot in, verified assignment out. No web, no database."""
