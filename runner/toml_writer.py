"""A minimal TOML writer for plans (tomllib reads only): tables, arrays of tables, scalars."""
from __future__ import annotations

import json
import re

BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")  # TOML bare keys: ASCII letters, digits, _ and - only


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_scalar(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _key(key: str) -> str:
    return key if BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _is_table_list(value) -> bool:
    return isinstance(value, list) and value and all(isinstance(v, dict) for v in value)


def _write_table(data: dict, prefix: str, lines: list[str]) -> None:
    for key, value in data.items():
        if not isinstance(value, dict) and not _is_table_list(value):
            lines.append(f"{_key(key)} = {_scalar(value)}")
    for key, value in data.items():
        name = f"{prefix}.{_key(key)}" if prefix else _key(key)
        if isinstance(value, dict):
            lines.append("")
            lines.append(f"[{name}]")
            _write_table(value, name, lines)
        elif _is_table_list(value):
            for item in value:
                lines.append("")
                lines.append(f"[[{name}]]")
                _write_table(item, name, lines)


def dumps(data: dict) -> str:
    lines: list[str] = []
    _write_table(data, "", lines)
    return "\n".join(lines).strip() + "\n"
