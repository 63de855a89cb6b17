"""Participant SDK (`participants.sdk`) and the sample workers (`participants.workers`:
inventory, payment, shipping, notification). See docs/PARTICIPANTS.md."""
