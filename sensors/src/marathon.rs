//! The marathon sensor (being written).

use crate::{SensorKind, TriggerTypeInfo};

pub fn kind() -> SensorKind {
    SensorKind {
        name: "marathon",
        description: "marathon",
        trigger_types: Vec::<TriggerTypeInfo>::new,
        build: |_| Err("the marathon sensor is not built yet".to_string()),
    }
}
