"""Engine-agnostic core: keys, shards, validation, scoring, statistics. No engine imports here."""
