"""Participant SDK (`participants.sdk`); samples built on it live in `participants.samples`
(the order saga's workers, fault injection). See docs/PARTICIPANTS.md."""
