"""The kiosk's built-in plugins; each is registered through the ``kiosk``
entry-point group exactly as a third-party plugin would be."""
