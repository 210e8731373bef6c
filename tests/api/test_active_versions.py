"""The active version online scoring uses: reread at most ``ttl`` seconds after it was read."""

from __future__ import annotations

import asyncio

from pipelines.api.versions import ActiveVersions


class FakeDatabase:
    """``active_versions`` as a dict; counts the queries."""

    def __init__(self, versions: dict[str, str]) -> None:
        self.versions = versions
        self.queries = 0

    async def read(self, model: str) -> str | None:
        self.queries += 1
        return self.versions.get(model)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_version_is_reused_within_the_ttl_and_reread_when_it_expires() -> None:
    database, clock = FakeDatabase({"toy": "1"}), Clock()
    versions = ActiveVersions(database.read, ttl=1.0, clock=clock)

    async def scenario() -> list[str | None]:
        seen = [await versions.get("toy")]
        database.versions["toy"] = "2"  # published: visible once the entry expires
        clock.now += 0.99
        seen.append(await versions.get("toy"))
        clock.now += 0.01
        seen.append(await versions.get("toy"))
        return seen

    assert asyncio.run(scenario()) == ["1", "1", "2"]
    assert database.queries == 2


def test_models_that_are_not_served_are_asked_for_every_time() -> None:
    database = FakeDatabase({})
    versions = ActiveVersions(database.read, ttl=60.0, clock=Clock())

    async def scenario() -> list[str | None]:
        first = await versions.get("soon")
        database.versions["soon"] = "1"
        return [first, await versions.get("soon")]

    assert asyncio.run(scenario()) == [None, "1"]
    assert database.queries == 2
