//! Simulated tenant pods (being written).
