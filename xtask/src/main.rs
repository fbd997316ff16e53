//! xtask. (being written)
fn main() {}
