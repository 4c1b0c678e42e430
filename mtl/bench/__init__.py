"""The measurements behind make bench."""
