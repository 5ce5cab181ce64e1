"""What a STAC item says that a fetch needs: date, cloud cover, footprint, and the Sentinel-2 DN offset.

The DN offset decides reflectance = (DN + offset) / 10000, and two catalogue conventions meet here:

* products of processing baseline 04.00 and later (from 25 January 2022) carry an offset of
  -1000 in their pixels (``BOA_ADD_OFFSET``); catalogues that serve the product's own pixels (the
  Planetary Computer, Earth Search's ``sentinel-2-c1-l2a``) need -1000 from that baseline on;
* Earth Search's ``sentinel-2-l2a`` COGs have had the offset applied already, which its items
  say in ``earthsearch:boa_offset_applied: true`` — while their ``raster:bands`` still advertise
  ``offset: -0.1``. Subtracting 1000 again would darken every band by 0.1 reflectance.

:func:`dn_offset` decides, in this order: the catalogue's own flag that the offset is applied (0);
the processing baseline (``s2:processing_baseline``, else ``_N0400_`` in ``s2:product_uri``);
else the ``raster:bands`` offset/scale of the B02 asset. What it decided and why is written into
every fetched band file (``BOA_ADD_OFFSET``, ``PROCESSING_BASELINE``, ``BOA_ADD_OFFSET_SOURCE``
tags), where coal-prepare reads it, so nothing is guessed from a date later.

Example:
    >>> dn_offset({"id": "x", "properties": {"s2:processing_baseline": "05.09",
    ...            "earthsearch:boa_offset_applied": True}, "assets": {}}).offset
    0.0
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

#: Flags by which catalogues say they removed the BOA offset from the pixels already.
APPLIED_FLAGS = ("earthsearch:boa_offset_applied",)
_BASELINE_RE = re.compile(r"_N(\d{2})(\d{2})_")
#: Baseline from which L2A pixels carry the -1000 offset.
OFFSET_BASELINE = 4.0
BOA_OFFSET = -1000.0


@dataclass(frozen=True)
class DnOffset:
    """The DN offset for an item's bands (None when the item does not say) and why."""

    offset: float | None
    baseline: str | None
    why: str


def item_datetime(item: dict[str, Any]) -> dt.datetime:
    """The item's acquisition time (``datetime``, else ``start_datetime``), timezone-aware UTC."""
    p = item.get("properties", {})
    s = p.get("datetime") or p.get("start_datetime")
    if not s:
        raise ValueError(f"STAC item {item.get('id')} has neither datetime nor start_datetime")
    t = dt.datetime.fromisoformat(str(s).replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def item_cloud(item: dict[str, Any]) -> float | None:
    """``eo:cloud_cover`` in percent, or None when the item does not give it."""
    v = item.get("properties", {}).get("eo:cloud_cover")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def item_baseline(item: dict[str, Any]) -> str | None:
    p = item.get("properties", {})
    b = p.get("s2:processing_baseline") or p.get("processing:version")
    if b:
        return str(b)
    for k in ("s2:product_uri", "s2:granule_id", "s2:datatake_id"):
        m = _BASELINE_RE.search(str(p.get(k, "")))
        if m:
            return f"{m.group(1)}.{m.group(2)}"
    return None


def dn_offset(item: dict[str, Any], b02_key: str | None = None) -> DnOffset:
    """Decide the DN offset of a Sentinel-2 L2A item's bands (see the module docstring)."""
    p = item.get("properties", {})
    iid = item.get("id", "?")
    baseline = item_baseline(item)
    for flag in APPLIED_FLAGS:
        if p.get(flag) is True:
            return DnOffset(0.0, baseline, f"STAC item {iid}: {flag} = true (the catalogue applied the offset)")
    if baseline is not None:
        try:
            v = BOA_OFFSET if float(baseline) >= OFFSET_BASELINE else 0.0
        except ValueError:
            v = None
        if v is not None:
            return DnOffset(v, baseline, f"STAC item {iid}: processing baseline {baseline}")
    rb = (item.get("assets", {}).get(b02_key or "", {}).get("raster:bands") or [{}])[0]
    if isinstance(rb.get("offset"), (int, float)) and rb.get("scale"):
        v = float(rb["offset"]) / float(rb["scale"])
        return DnOffset(round(v, 6), baseline, f"STAC item {iid}: raster:bands offset {rb['offset']} / scale {rb['scale']}")
    return DnOffset(None, baseline, f"STAC item {iid} gives no processing baseline or offset")
