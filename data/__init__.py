"""Data: public-source fetching, readers with clear errors, splits, and the bundled samples."""
