"""Settings: environment names, nested sections, fail-fast production checks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.config import DEV_HMAC_SECRET, Settings, normalise_database_url

GOOD_SECRET = "s" * 40


def test_defaults_are_the_embedded_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DATABASE_URL", "REDIS_URL", "CDMO_ENV"):
        monkeypatch.delenv(var, raising=False)
    settings = Settings()
    assert settings.env == "development"
    assert settings.effective_database_url == "sqlite:///var/cdmo.db"
    assert settings.redis_url is None
    assert settings.http.max_body_bytes == 1_048_576


def test_environment_variables_and_nested_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://app:pw@db:5432/market")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/1")
    monkeypatch.setenv("CDMO_RATE_LIMIT__REQUESTS", "1200")
    monkeypatch.setenv("CDMO_HTTP__MAX_BODY_BYTES", "2048")
    settings = Settings()
    assert settings.effective_database_url == "postgresql+psycopg://app:pw@db:5432/market"
    assert settings.redis_url == "redis://cache:6379/1"
    assert settings.rate_limit.requests == 1200
    assert settings.http.max_body_bytes == 2048


def test_url_normalisation() -> None:
    assert normalise_database_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert normalise_database_url("postgresql+psycopg://u@h/d") == "postgresql+psycopg://u@h/d"
    assert normalise_database_url("sqlite:///x.db") == "sqlite:///x.db"


@pytest.mark.parametrize(
    "overrides,complaint",
    [
        ({}, "HMAC_SECRET"),
        ({"auth": {"hmac_secret": "short"}}, "HMAC_SECRET"),
        ({"auth": {"hmac_secret": GOOD_SECRET}, "database_url": None}, "DATABASE_URL"),
        ({"auth": {"hmac_secret": GOOD_SECRET}, "database_url": "sqlite:///p.db"}, "DATABASE_URL"),
        ({"auth": {"hmac_secret": GOOD_SECRET}, "redis_url": None}, "REDIS_URL"),
    ],
)
def test_production_refuses_unsafe_settings(
    monkeypatch: pytest.MonkeyPatch, overrides: dict, complaint: str
) -> None:
    for var in ("DATABASE_URL", "REDIS_URL"):
        monkeypatch.delenv(var, raising=False)
    values = {
        "env": "production",
        "database_url": "postgresql://db/x",
        "redis_url": "redis://r",
        **overrides,
    }
    with pytest.raises(ValidationError, match=complaint):
        Settings(**values)


def test_production_accepts_safe_settings() -> None:
    settings = Settings(
        env="production",
        database_url="postgresql://db/x",
        redis_url="redis://r",
        auth={"hmac_secret": GOOD_SECRET},
    )
    assert settings.auth.hmac_secret.get_secret_value() != DEV_HMAC_SECRET
    assert "s" * 40 not in repr(settings)  # secrets stay out of logs
