"""Outbound notifications: notifiers, the transactional outbox, channels and the dispatcher.

events.py turns history events into outbox rows inside the queue's transaction; notifiers.py
manages subscriptions; channels.py renders a delivery for its channel; transport.py sends it
(SSRF-guarded HTTP, SMTP); dispatcher.py is the one background sender per database file.
"""
