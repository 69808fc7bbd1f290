"""A mixin that makes a flat dataclass of settings round-trip through JSON/YAML dicts."""

from __future__ import annotations

from dataclasses import asdict, fields


class DictConfig:
    """``to_dict`` writes tuples as lists; ``from_dict`` rejects unknown keys and reads lists back as tuples."""

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict):
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
