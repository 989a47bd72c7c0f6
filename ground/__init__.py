"""The ground: settings, logs, stopping, metrics; everything may import it, it imports
only ``schemas``."""
