//! What a service's controller is given ([`ServiceContext`]), and what its
//! parts share ([`Shared`]): the service's name, config, event log,
//! balancer and clock, passed by reference so each part borrows only its
//! own state mutably.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use ebb_core::config::ServiceConfig;
use ebb_core::scaling;

use crate::driver::Driver;
use crate::events::{EventLog, NewEvent};
use crate::metrics::history;
use crate::metrics::host::HostMonitor;
use crate::proxy::ServiceProxy;
use crate::state::{ReplicaRecord, ServiceRecord, StateStore};

/// Everything a service's controller task needs.
pub struct ServiceContext {
    pub config: ServiceConfig,
    pub driver: Arc<dyn Driver>,
    pub proxy: Arc<ServiceProxy>,
    pub events: Arc<EventLog>,
    pub state_dir: PathBuf,
    /// The admin API's base URL, given to replicas so they can protect
    /// themselves (`EBB_ADMIN_URL`).
    pub admin_url: String,
    /// Where desired state, replicas and history are kept across restarts.
    pub store: Option<StateStore>,
    /// What the store held for this service when ebb started.
    pub restored: RestoredService,
    /// ebb's host, when this service's replicas run on it (not on Swarm).
    pub host: Option<Arc<HostMonitor>>,
}

/// One service's part of what the state store held at start.
#[derive(Debug, Default)]
pub struct RestoredService {
    pub record: Option<ServiceRecord>,
    pub replicas: Vec<ReplicaRecord>,
    pub history: Vec<history::ServicePoint>,
}

/// What every part of a service's controller reads: who it is, its config,
/// where events go, its balancer, and its clock.
pub(super) struct Shared {
    pub(super) name: String,
    pub(super) config: ServiceConfig,
    pub(super) proxy: Arc<ServiceProxy>,
    pub(super) events: Arc<EventLog>,
    /// Origin of the autoscaler's and the deploy planner's time axis.
    pub(super) origin: Instant,
}

impl Shared {
    /// The core's clock: time since this controller started.
    pub(super) fn now(&self) -> scaling::Time {
        self.origin.elapsed()
    }

    pub(super) fn record(&self, event: NewEvent) {
        self.events.record(event);
    }
}
