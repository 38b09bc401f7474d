"""inverseg: semantic image synthesis — turning semantic label maps into photographs."""

__version__ = "0.1.0"
