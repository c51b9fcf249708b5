//! Probes one tenant pod (placeholder, being written).
