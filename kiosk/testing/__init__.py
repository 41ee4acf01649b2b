"""Test peers that ship with the kiosk, as gpiozero ships ``pins/mock.py``.

- :mod:`kiosk.testing.fake_stripe`: a Stripe peer on 127.0.0.1 that holds
  the real contract (every request checked against the types stripe-python
  generates for the API version it sends), for tests, benchmarks, the demo
  and screenshots;
- :mod:`kiosk.testing.stripe_contract`: that check.

Nothing on the sale path imports this package.
"""
