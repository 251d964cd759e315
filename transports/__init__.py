"""Transports: how coordinators reach each other (TCP) and find each other (discovery)."""
