"""Device profiles and sensor impulse sources for edge machines."""
