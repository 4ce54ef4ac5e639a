"""Implementations of the ports, each named for the technology it speaks."""
