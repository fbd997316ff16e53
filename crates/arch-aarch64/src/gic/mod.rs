//! Physical GIC drivers and the GIC virtualization interface (being written).
