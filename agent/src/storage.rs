//! Volume usage of a tenant pod (placeholder, being written).
