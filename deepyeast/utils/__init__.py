"""Helpers every part of DeepYeast uses: file I/O with clear errors, progress bars, figures."""
