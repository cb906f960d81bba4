"""The marketplace web service: FastAPI app, persistence, auth and the operator CLI."""
