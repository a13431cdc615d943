//! The remote read cache (being written).
