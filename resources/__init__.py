"""Data files shipped with wsconsole: the sample scenarios, the icons, the .desktop entry.

This top-level folder is installed as the package `wsconsole.resources` (pyproject.toml maps
it), so `importlib.resources.files("wsconsole.resources")` finds these files in a source
checkout, an installed wheel and the PyInstaller bundle alike. No code lives here.
"""
