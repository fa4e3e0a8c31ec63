//! The docker sensor (being written).

use crate::{SensorKind, TriggerTypeInfo};

pub fn kind() -> SensorKind {
    SensorKind {
        name: "docker",
        description: "docker",
        trigger_types: Vec::<TriggerTypeInfo>::new,
        build: |_| Err("the docker sensor is not built yet".to_string()),
    }
}
