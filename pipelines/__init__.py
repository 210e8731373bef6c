"""predcache: batch-first keyed prediction with an exactly-once PostgreSQL cache."""

from __future__ import annotations

__version__ = "0.1.0"
