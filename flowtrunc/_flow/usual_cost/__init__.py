"""The effective flow of the usual cost after an adapted output layer (docs/theory.md §9)."""
