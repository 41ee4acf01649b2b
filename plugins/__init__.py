"""The kiosk's built-in plugins, installed as ``kiosk_builtins``.

They are registered first, from :data:`kiosk.defaults.DEFAULT_PLUGINS`, then
third-party plugins from the ``kiosk`` entry-point group.  Each imports from
the kiosk only through ``kiosk`` itself (the one door a third-party plugin
uses too); ``tests/test_boundaries.py`` reads their imports to keep it so.
"""
