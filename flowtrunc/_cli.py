"""Command line entry point (placeholder until the demo lands)."""


def main(argv=None) -> int:
    return 0
