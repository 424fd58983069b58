"""Dialogs reached from the main window's menus (About, Diagnose endpoint)."""
