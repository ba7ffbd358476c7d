"""Building blocks shared by the architectures, one idea per file."""
