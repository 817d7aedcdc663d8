"""Blind restoration: the shipped task adapters (zoo), a degradation router, and per-image ``auto`` decisions."""
