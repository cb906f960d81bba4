"""API keys: high-entropy random tokens, stored only as HMAC-SHA-256 under a server secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

KEY_PREFIX = "ck_"
DISPLAY_PREFIX_LEN = 11  # "ck_" + 8 characters


def generate_api_key() -> str:
    """256 bits of randomness; a fast keyed hash is enough to store keys this strong."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str, secret: str) -> str:
    return hmac.new(secret.encode(), key.encode(), hashlib.sha256).hexdigest()


def display_prefix(key: str) -> str:
    return key[:DISPLAY_PREFIX_LEN]


def derived_key(secret: str, name: str) -> str:
    """A stable key for a fixed name (the demo marketplace), secret to whoever lacks ``secret``."""
    digest = hmac.new(secret.encode(), f"demo-key:{name}".encode(), hashlib.sha256).digest()
    return KEY_PREFIX + "demo_" + base64.urlsafe_b64encode(digest).decode().rstrip("=")
