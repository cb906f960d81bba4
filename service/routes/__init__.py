"""HTTP routes, one module per resource. Thin: parse, call a repository function, shape."""
