"""The kiosk's time zone: which day a payment falls on, and the times a vendor reads.

Payments are stored in UTC (``created_at``); only what a vendor reads (the
day's report, its CSV, the queue, status, notices, the screen) is shown in
``[kiosk] timezone``, or the system's zone when that is empty:
:func:`shown_time` for text, :func:`short_time` for a small screen.  A day's bounds are the zone's own
midnights, so a 23- or 25-hour day (daylight saving) is still one day.
This module never changes a stored time, and never reads the clock itself.
"""
from __future__ import annotations

import os
from datetime import date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .payment import iso, parse_iso

LOCALTIME = "/etc/localtime"


def zone_problem(name: str) -> str | None:
    """One line saying why ``name`` is not a time zone, or None ("" is the system's)."""
    if not name:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):       # unknown, or not a zone key at all ("../x", "/etc")
        return f"{name!r} is not a time zone name (like Europe/Paris or Asia/Tokyo; empty: the system's)"
    return None


def system_zone() -> tzinfo:
    """The system's zone: ``$TZ``, else ``/etc/localtime``, else today's offset."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name and zone_problem(name) is None:
        return ZoneInfo(name)
    try:
        target = os.path.realpath(LOCALTIME)
        if "/zoneinfo/" in target:        # a link into the zone database names the zone (Debian, Raspberry Pi OS)
            return ZoneInfo(target.split("/zoneinfo/", 1)[1])
        with open(LOCALTIME, "rb") as handle:
            return ZoneInfo.from_file(handle, key="localtime")
    except (OSError, ValueError, ZoneInfoNotFoundError):
        pass
    # a POSIX TZ rule ("JST-9") or no zone database: the C library's offset today, without its DST rules
    return datetime.now().astimezone().tzinfo


def kiosk_zone(config) -> tzinfo:
    """``[kiosk] timezone`` (checked when the configuration was read), or the system's."""
    name = config["kiosk"].get("timezone", "")
    return ZoneInfo(name) if name else system_zone()


def zone_name(zone: tzinfo) -> str:
    return getattr(zone, "key", None) or datetime.now(zone).tzname() or "local"


def day_of(moment: datetime, zone: tzinfo) -> date:
    return moment.astimezone(zone).date()


def day_bounds(day: date, zone: tzinfo) -> tuple[str, str]:
    """The day's first instant and the next day's, as stored (ISO 8601 UTC):
    ``start <= created_at < end`` holds exactly the payments of ``day``."""
    start = datetime.combine(day, time(0), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    return iso(start), iso(end)


def local(stored: str | None, zone: tzinfo) -> str:
    """A stored time as the vendor reads it: ``2026-12-05T23:59:30+09:00``."""
    moment = parse_iso(stored)
    return "" if moment is None else moment.astimezone(zone).isoformat(timespec="seconds")


def shown_time(stored: str | datetime | None, zone: tzinfo) -> str:
    """A time as the vendor reads it in text, with the zone: ``2026-12-06 14:03 JST``
    ("" when there is none).  Daylight saving shows as the zone's own name (EST, EDT)."""
    moment = parse_iso(stored) if isinstance(stored, str) or stored is None else stored
    if moment is None:
        return ""
    here = moment.astimezone(zone)
    return f"{here:%Y-%m-%d %H:%M} {here.tzname() or zone_name(zone)}"


def short_time(stored: str | datetime | None, zone: tzinfo, now: datetime) -> str:
    """A time on a small screen: ``14:03`` on the kiosk's today, else ``12/05 14:03``
    ("" when there is none); ``now`` is the kiosk's clock (UTC)."""
    moment = parse_iso(stored) if isinstance(stored, str) or stored is None else stored
    if moment is None:
        return ""
    here = moment.astimezone(zone)
    return f"{here:%H:%M}" if here.date() == now.astimezone(zone).date() else f"{here:%m/%d %H:%M}"
