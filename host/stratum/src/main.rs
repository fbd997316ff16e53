//! The `stratum` command. (being written)
fn main() {}
