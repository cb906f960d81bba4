"""Wire and domain contracts. A leaf package: imports nothing of ours."""
