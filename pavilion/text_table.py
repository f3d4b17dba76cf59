"""Plain-text tables for the commands that print what a service's admin port says (`pavilion status`,
`pavilion ratelimit-inspect`)."""

from __future__ import annotations

__all__ = ["table"]


def table(rows: list[list[str]]) -> str:
    """`rows` (the first is the header) as left-aligned columns two spaces apart, without trailing blanks."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)
