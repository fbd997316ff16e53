//! System-test harness. (being written)
