"""Load tests (locust). They talk HTTP only."""
