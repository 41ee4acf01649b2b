"""Built-in offline-limits policy.

Limits follow history: each offline payment Stripe accepts grows them a
little (up to ``max_growth``), each decline shrinks them (down to
``min_trust``), and the longer the kiosk goes without a successful sync the
smaller they get, reaching ``floor`` once the oldest pending payment is 24 h
old -- the end of Stripe's forwarding window.
"""
from __future__ import annotations

import math

from kiosk import Limits, hookimpl

WINDOW_HOURS = 24.0


class StandardLimits:
    def __init__(self):
        self.rules = None   # the [limits] table, set by kiosk_startup

    @hookimpl
    def kiosk_startup(self, kiosk):
        self.rules = kiosk.config["limits"]

    @hookimpl(trylast=True)
    def kiosk_offline_limits(self, base: Limits, history):
        rules = self.rules or {"growth_per_success": 0.02, "max_growth": 2.0, "shrink_per_decline": 0.2,
                               "min_trust": 0.25, "floor": 0.1}
        trust = (1.0 + rules["growth_per_success"] * history.forwarded) \
            * (1.0 - rules["shrink_per_decline"]) ** history.declined
        trust = max(rules["min_trust"], min(rules["max_growth"], trust))
        floor = rules["floor"]
        if history.oldest_pending_hours is not None and history.oldest_pending_hours >= WINDOW_HOURS:
            freshness = floor
        else:
            # whole minutes, so the limits do not creep down second by second
            minutes = math.floor(max(0.0, history.hours_since_sync) * 60)
            stale = min(1.0, minutes / (WINDOW_HOURS * 60))
            freshness = 1.0 - (1.0 - floor) * stale
        factor = trust * freshness
        return Limits(currency=base.currency,
                      per_transaction=int(base.per_transaction * factor),
                      total=int(base.total * factor),
                      count=max(1 if factor > 0 else 0, math.floor(base.count * min(1.0, factor) + 1e-9)))


plugin = StandardLimits()
