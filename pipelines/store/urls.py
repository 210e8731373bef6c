"""Database URLs as every client here reads them: SQLAlchemy-style driver suffixes removed.

BI tools and SQLAlchemy users write ``postgresql+psycopg2://...``; libpq (psycopg) and asyncpg
read only ``postgresql://``. Every URL predcache accepts passes through :func:`libpq_url`.
"""

from __future__ import annotations

import re

_DRIVER_SUFFIX = re.compile(r"^(?P<scheme>postgres(?:ql)?)\+[A-Za-z0-9_]+://")


def libpq_url(url: str) -> str:
    """``url`` without a SQLAlchemy driver suffix (``postgresql+psycopg2://`` -> ``postgresql://``).

    Key=value connection strings and plain URLs come back unchanged.
    """
    return _DRIVER_SUFFIX.sub(r"\g<scheme>://", url.strip(), count=1)
