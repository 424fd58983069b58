"""Packages for setuptools: every wsconsole package found on disk, plus the top-level
resources/ folder installed as wsconsole.resources with its sub-folders (the mapping and
the data files are in pyproject.toml); `packages.find` alone cannot see them because they
do not live under wsconsole/."""

from setuptools import find_namespace_packages, find_packages, setup

RESOURCES = ["wsconsole.resources",
             *(f"wsconsole.resources.{name}" for name in find_namespace_packages(
                 where="resources", exclude=["__pycache__*"]))]

setup(packages=[*find_packages(include=["wsconsole", "wsconsole.*"]), *RESOURCES])
