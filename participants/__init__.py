"""Participant SDK and the sample workers (inventory, payment, shipping, notification)."""
