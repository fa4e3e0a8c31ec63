//! Grafana webhook payloads (being written).
