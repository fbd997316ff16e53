//! The `stratum` host tool library. (being written)
