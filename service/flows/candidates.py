"""Instant candidates: one project (stored or a draft body) against the current market.

The site side of the market is encoded once per *supply* version and kept in memory
(:class:`SiteSideCache`, one per database): every request reads the current supply version
(one indexed row) and uses the cache only when it was built at that version or a later one;
otherwise one thread rebuilds it from a consistent snapshot of the sites and listings while
the others wait for it. The supply version moves only with writes to sites, certifications,
listings and held hours (``service.db.mark_supply_changed``), not with project or proposal
writes, so a busy makers' market does not rebuild the site side. Each API process holds its
own cache, so processes never share a stale one; a bump committed by any process is seen by
the next request of every process.
"""

from __future__ import annotations

import datetime as dt
import threading
import weakref

from sqlmodel import Session

from matcher.candidates import SiteSide, instant_candidates, warm_up
from schemas.api import ProjectCreate
from schemas.api.candidates import CandidatesPublic
from schemas.market import Project as MarketProject
from schemas.market import RunParams
from service import repositories as repo
from service.auth import Principal
from service.db import Database, read_supply_version
from service.models import Project

# The batch's parameters: candidates are ranked by the value the optimiser would give them.
PARAMS = RunParams()
DRAFT_ID = "draft"


class SiteSideCache:
    """The market's site side at one version (thread-safe; rebuilt when the version moves)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._side: SiteSide | None = None
        self._supply_version = -1  # the supply version self._side was built at
        self._lock = threading.Lock()
        self.builds = 0  # how many times the site side was encoded (for tests and metrics)

    def at(self, supply_version: int) -> SiteSide:
        """The site side built at exactly ``supply_version``, or at a later one if the supply
        moved while it was being built (never an earlier one)."""
        side = self._side
        if side is not None and self._supply_version >= supply_version:
            return side
        with self._lock:  # one thread builds, the others wait for its result
            side = self._side
            if side is None or self._supply_version < supply_version:
                side = self._build()
            return side

    def _build(self) -> SiteSide:
        if self.builds == 0:
            warm_up()  # so no request pays JIT time after the first build
        with self._db.snapshot_session() as session:
            supply_version = read_supply_version(session)  # the same snapshot as the rows
            supply = repo.market.build_supply(session=session, as_of=dt.datetime.now(dt.UTC).date())
        side = SiteSide.from_snapshot(supply)
        self._side, self._supply_version = side, supply_version
        self.builds += 1
        return side

    def forget(self) -> None:
        """Drop the cached side (when a database is emptied and its version restarts, as
        tests do; in service the version only grows)."""
        with self._lock:
            self._side, self._supply_version = None, -1


_caches: weakref.WeakKeyDictionary[Database, SiteSideCache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def site_side_cache(db: Database) -> SiteSideCache:
    with _caches_lock:
        cache = _caches.get(db)
        if cache is None:
            cache = _caches[db] = SiteSideCache(db)
        return cache


def _current(db: Database, session: Session) -> SiteSide:
    """The site side at the supply version read now, on the request's own session (one
    indexed row; no second connection)."""
    return site_side_cache(db).at(read_supply_version(session))


def project_candidates(
    *, db: Database, session: Session, project: Project, limit: int
) -> CandidatesPublic:
    """Candidates of a stored project (any status: a quote changes nothing)."""
    market_project = MarketProject.model_validate(
        {name: getattr(project, name) for name in MarketProject.model_fields}
    )
    return instant_candidates(
        _current(db, session), market_project, limit=limit, params=PARAMS, project_id=project.id
    )


def draft_candidates(
    *, db: Database, principal: Principal, draft: ProjectCreate, limit: int
) -> CandidatesPublic:
    """Candidates of a project body before it is posted: checked in context exactly as
    ``POST /v1/projects`` checks it (its maker, its excluded CDMOs); nothing is written.
    Read in an autocommit session of its own (the POST's session would be a transaction)."""
    with db.session(write=False) as session:
        maker_id = repo.projects.check_project_create(
            session=session, principal=principal, project_in=draft
        )
        supply_version = read_supply_version(session)
    side = site_side_cache(db).at(supply_version)
    market_project = MarketProject.model_validate(
        {
            **draft.model_dump(mode="json", exclude={"maker_id", "status"}),
            "id": DRAFT_ID,
            "maker_id": maker_id,
        }
    )
    return instant_candidates(side, market_project, limit=limit, params=PARAMS)
