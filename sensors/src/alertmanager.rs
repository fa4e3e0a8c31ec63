//! Alertmanager webhook payloads (being written).
