//! The mesos sensor (being written).

use crate::{SensorKind, TriggerTypeInfo};

pub fn kind() -> SensorKind {
    SensorKind {
        name: "mesos",
        description: "mesos",
        trigger_types: Vec::<TriggerTypeInfo>::new,
        build: |_| Err("the mesos sensor is not built yet".to_string()),
    }
}
