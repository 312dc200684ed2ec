//! The status document moved to [`crate::wire`] (it is what the admin API
//! serves); these names stay so the controller's code reads unchanged.

pub use crate::wire::{
    DeployStatus, FleetStatus, HostStatus, ReplicaState, ReplicaStatus, SaturationStatus, ServiceStatus,
};
