"""The starter notebooks (package data), copied into users' homes by extensions/starter_notebooks.py."""
