"""Every configuration field is typed, described and has its default in the models."""

from __future__ import annotations

from pydantic import BaseModel

from mlcanary.config import Settings


def _fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, object]]:
    found = []
    for name, info in model.model_fields.items():
        found.append((prefix + name, info))
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.extend(_fields(annotation, f"{prefix}{name}."))
    return found


def test_every_field_is_described_and_typed() -> None:
    fields = _fields(Settings)
    assert len(fields) > 30
    undocumented = [
        name
        for name, info in fields
        if not (info.description or issubclass_model(info.annotation))  # type: ignore[attr-defined]
    ]
    assert undocumented == []
    untyped = [name for name, info in fields if info.annotation is None]  # type: ignore[attr-defined]
    assert untyped == []


def issubclass_model(annotation: object) -> bool:
    """Sections are described by their class docstring instead of a field description."""
    return isinstance(annotation, type) and issubclass(annotation, BaseModel) and bool(annotation.__doc__)


def test_defaults_validate_on_their_own() -> None:
    settings = Settings()
    assert settings.profile == "local"
    assert settings.serving.front_door_port == 8080
    assert settings.model.name == "fraud-detector"
