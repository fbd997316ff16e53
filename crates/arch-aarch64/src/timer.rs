//! Generic timer access (being written).
