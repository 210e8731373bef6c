"""Thin engine adapters: read, call core, write. Engine modules import their engine lazily."""
