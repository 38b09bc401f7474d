"""Command line: ``inverseg <command> …``. Each command module registers its own sub-parser."""
